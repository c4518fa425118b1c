"""The training loss under FSDP2 (`fully_shard`) on CPU/gloo: the recipe's loss must go through the root forward."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    import os, socket, sys
    import torch, torch.distributed as dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM
    from evalsuite.trainers.loss import token_loss_sum
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    batch = {"input_ids": torch.randint(0, 100, (2, 8)), "position_ids": torch.arange(8).repeat(2, 1),
             "targets": torch.randint(0, 100, (2, 8))}
    batch["targets"][0, :3] = -100  # prompt positions carry no target
    plain = token_loss_sum(model, batch, "cpu").item()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    sharded = token_loss_sum(model, batch, "cpu")
    sharded.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    print(f"LOSS {plain:.6f} {sharded.item():.6f}")
    dist.destroy_process_group()
''')


@pytest.mark.slow
def test_loss_under_fsdp2_equals_the_unwrapped_loss(tmp_path: Path) -> None:
    """Catches: `token_loss_sum` calling `model.get_decoder()` directly whenever the model has `.config`, which an
    FSDP-wrapped model still has; that bypasses FSDP's root forward (failed: "aten.embedding.default got mixed
    torch.Tensor and DTensor")."""
    script = tmp_path / "fsdp_loss.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain, sharded = (float(x) for x in proc.stdout.split("LOSS ")[1].split())
    assert sharded == pytest.approx(plain, rel=1e-5)
