"""Resumable training: a run interrupted and started again ends exactly where an uninterrupted one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compresslm.errors import ConfigError
from compresslm.models import TokenStream, TrainConfig, Transformer, config_for_size, train_lm
from compresslm.models.resume import CHECKPOINT, checkpoint_dir


def _stream(seed: int = 0, n: int = 4000) -> TokenStream:
    rng = np.random.default_rng(seed)
    text = rng.choice(np.frombuffer(b"abcdefgh \n", dtype=np.uint8), size=n)
    return TokenStream(text.astype(np.uint8), name="train")


def _model(seed: int) -> Transformer:
    # dropout > 0: the torch RNG state must be resumed too
    return Transformer(config_for_size("tiny", vocab_size=256, max_seq_len=32, dropout=0.1), seed=seed)


def _config(**kw) -> TrainConfig:
    base = dict(max_tokens=4 * 32 * 9, batch_size=4, seq_len=32, lr=3e-3, seed=3, threads=1,
                device="cpu", eval_every_tokens=4 * 32 * 3, eval_tokens=256, log_every_steps=2)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _comparable(curve: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("elapsed_s", "train_s")} for e in curve]


def test_interrupted_run_continues_where_it_stopped(tmp_path) -> None:
    train, held = _stream(0), _stream(1, 600)
    whole = train_lm(_model(0), train, _config(), eval_sets={"held": held}, progress=False)

    work = tmp_path / "run"
    first = train_lm(
        _model(0),
        train,
        _config(),
        eval_sets={"held": held},
        progress=False,
        work_dir=work,
        stop_after_steps=4,
    )
    assert first.steps == 4 and checkpoint_dir(work) == work / CHECKPOINT
    # a fresh process would build the model from another seed: everything must come from the checkpoint
    resumed_model = _model(123)
    second = train_lm(
        resumed_model, train, _config(), eval_sets={"held": held}, progress=False, work_dir=work
    )
    assert second.steps == whole.steps == 9
    for (name, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert _comparable(second.curve) == _comparable(whole.curve)

    # started again after the end, it does nothing and keeps the final weights
    again = _model(7)
    third = train_lm(again, train, _config(), eval_sets={"held": held}, progress=False, work_dir=work)
    assert third.steps == 9
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), resumed_model.parameters(), strict=True))


def test_resume_refuses_another_schedule(tmp_path) -> None:
    work = tmp_path / "run"
    train_lm(_model(0), _stream(0), _config(), progress=False, work_dir=work, stop_after_steps=2)
    with pytest.raises(ConfigError, match="lr"):
        train_lm(_model(0), _stream(0), _config(lr=1e-3), progress=False, work_dir=work)


def test_interrupted_save_falls_back_to_the_previous_checkpoint(tmp_path) -> None:
    work = tmp_path / "run"
    train_lm(_model(0), _stream(0), _config(), progress=False, work_dir=work, stop_after_steps=2)
    # a crash between the two renames of a save leaves only checkpoint.old/ complete
    (work / CHECKPOINT).rename(work / (CHECKPOINT + ".old"))
    (work / (CHECKPOINT + ".tmp")).mkdir()
    result = train_lm(_model(5), _stream(0), _config(), progress=False, work_dir=work, stop_after_steps=1)
    assert result.steps == 3


def test_resume_may_change_the_length_of_the_run(tmp_path) -> None:
    work = tmp_path / "run"
    train_lm(_model(0), _stream(0), _config(), progress=False, work_dir=work, stop_after_steps=2)
    shorter = train_lm(_model(0), _stream(0), _config(max_tokens=4 * 32 * 5), progress=False, work_dir=work)
    assert shorter.steps == 5
    assert [e["step"] for e in shorter.curve if e["train_loss"] is not None][:1] == [2]


def _lrs(result) -> dict[int, float]:
    return {e["step"]: e["lr"] for e in result.curve if e["train_loss"] is not None}


def test_extended_run_rewarms_from_its_last_rate_onto_the_longer_schedule(tmp_path) -> None:
    from compresslm.models.train import lr_at

    work = tmp_path / "run"
    short = _config(log_every_steps=1, eval_every_tokens=None)
    first = train_lm(_model(0), _stream(0), short, progress=False, work_dir=work)
    assert first.steps == short.total_steps == 9
    last_lr = _lrs(first)[9]  # the rate of the last step, near the short cosine's floor

    longer = _config(max_tokens=4 * 32 * 60, log_every_steps=1, eval_every_tokens=None)
    extended = train_lm(_model(0), _stream(0), longer, progress=False, work_dir=work, stop_after_steps=2)
    assert extended.resumed_step == 9 and extended.steps == 11
    lrs = _lrs(extended)
    ramp = longer.n_warmup_steps
    assert ramp == 3
    # ramps from the last rate used towards the longer schedule (which is back near its peak) ...
    assert lrs[10] == pytest.approx(last_lr + (lr_at(9, longer) - last_lr) / ramp)
    assert last_lr < lrs[10] < lrs[11] < lr_at(10, longer)
    # ... and, interrupted again, replays exactly the rates an uninterrupted extension uses
    again = train_lm(_model(0), _stream(0), longer, progress=False, work_dir=work, stop_after_steps=3)
    assert again.resumed_step == 11
    assert _lrs(again)[12] == pytest.approx(last_lr + (lr_at(11, longer) - last_lr) * 3 / ramp)
    assert _lrs(again)[14] == pytest.approx(lr_at(13, longer))


def test_resume_still_refuses_other_changes_after_an_extension(tmp_path) -> None:
    work = tmp_path / "run"
    train_lm(_model(0), _stream(0), _config(), progress=False, work_dir=work, stop_after_steps=2)
    longer = _config(max_tokens=4 * 32 * 20)
    train_lm(_model(0), _stream(0), longer, progress=False, work_dir=work, stop_after_steps=1)
    for change in ({"lr": 1e-3}, {"batch_size": 2}, {"seed": 4}):
        with pytest.raises(ConfigError, match=f"another config \\({next(iter(change))}"):
            train_lm(_model(0), _stream(0), _config(max_tokens=4 * 32 * 20, **change), progress=False,
                     work_dir=work)  # fmt: skip
