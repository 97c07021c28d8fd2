"""The large-batch benchmark's workloads, run at tiny sizes only (the real sizes need a quiet
machine and gigabytes)."""

import json

import pytest
import torch

from benchmarks import large_batch


def _parameters(step):
    return [p.detach().clone() for p in step.model.parameters()]


def test_cached_step_trains_the_model_exactly_as_the_plain_step():
    plain = large_batch.train_step(batch_size=24, mode="plain", embedding=16)
    cached = large_batch.train_step(batch_size=24, mode="cached", chunk_size=5, tile_size=7, embedding=16)
    before = _parameters(plain)
    assert all(torch.equal(a, b) for a, b in zip(before, _parameters(cached)))  # same seed, same model
    for _ in range(2):
        plain()
        cached()
        assert cached.last_loss == pytest.approx(plain.last_loss, rel=1e-5)
    after_plain, after_cached = _parameters(plain), _parameters(cached)
    assert any(not torch.equal(a, b) for a, b in zip(before, after_plain))  # the step moved the model
    for a, b in zip(after_plain, after_cached):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert plain.report() == {"loss": plain.last_loss, "batch_size": 24}


def test_tiled_loss_step_equals_the_dense_one():
    dense = large_batch.loss_step(n=20, d=8)
    tiled = large_batch.loss_step(n=20, d=8, tile_size=3)
    dense()
    tiled()
    assert tiled.last_loss == pytest.approx(dense.last_loss, rel=1e-6)
    torch.testing.assert_close(tiled.embeddings.grad, dense.embeddings.grad, rtol=1e-5, atol=1e-7)
    assert dense.last_loss > 0 and dense.embeddings.grad.abs().sum() > 0


def test_unknown_mode_and_cached_without_chunk_are_rejected():
    with pytest.raises(ValueError, match="mode must be 'plain' or 'cached', got 'fast'"):
        large_batch.train_step(batch_size=4, mode="fast")
    with pytest.raises(ValueError, match="needs a chunk_size"):
        large_batch.train_step(batch_size=4, mode="cached")


def test_memory_formulas():
    assert large_batch.dense_matrix_gb(65536) == pytest.approx(17.18, abs=0.01)  # 4 * 65536^2 bytes
    assert large_batch.clip_logits_bytes(8, 1, local_loss=False) == 256
    assert large_batch.clip_logits_bytes(8, 2, local_loss=False) == 256  # every process: M x M
    assert large_batch.clip_logits_bytes(8, 2, local_loss=True) == 128  # its M/2 rows x M
    assert large_batch.clip_logits_bytes(8, 4, local_loss=True, bytes_per_value=2) == 32
    with pytest.raises(ValueError, match="must split evenly"):
        large_batch.clip_logits_bytes(9, 2, local_loss=True)
    clip = large_batch.clip_rows(65536, (1, 2))
    assert clip[1]["local_gb"] == pytest.approx(clip[0]["dense_gb"] / 2)


def test_rows_cover_the_documented_sizes():
    names = [r.name for r in large_batch.rows()]
    assert "plain step, batch 16384" in names and "cached step, batch 16384" in names
    assert "plain step, batch 2048" in names and "cached step, batch 2048" in names
    assert "NTXent tiled, N=65536" in names and "NTXent dense, N=8192" in names
    assert "NTXent dense, N=65536" not in names  # stated, not run
    big = next(r for r in large_batch.rows() if r.name == "NTXent tiled, N=65536")
    assert big.kwargs == {"n": 65536, "d": 512, "tile_size": 1024} and "17.2 GB" in big.note


def test_quick_run_measures_writes_and_prints(tmp_path, capsys):
    out = tmp_path / "large_batch.json"
    only = ["cached step, batch 32", "plain step, batch 32", "NTXent dense, N=128"]
    large_batch.main(["--quick", "--repeats", "1", "--results", str(out), "--only", *only])
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["rows"]] == ["plain step, batch 32", "cached step, batch 32",
                                                  "NTXent dense, N=128"]
    assert all(r["status"] == "ok" and r["median_s"] > 0 for r in saved["rows"]), saved["rows"]
    table = capsys.readouterr().out
    assert "| cached step, batch 32 | ok |" in table
    assert "the time per sample of plain step, batch 32" in table
    assert "| 2 | 256 | 0.00 GB | 0.00 GB |" in table
    large_batch.main(["--quick", "--from-json", "--results", str(out)])
    assert capsys.readouterr().out == table
