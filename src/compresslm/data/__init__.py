"""The one data layer: reading corpora into records, accounting for every record, atomic writers,
and built-in corpora that exist on every machine with Python."""
