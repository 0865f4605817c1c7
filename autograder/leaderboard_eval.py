"""Inside a leaderboard sandbox: one student's checkpoint on the held-out text, in bits per byte.

Run by `autograder.leaderboard` as `python -I -m autograder.leaderboard_eval SPEC` inside the
grading sandbox (`autograder.sandbox`), with the checkpoint and the held-out bytes in the job's
read-only `probes/` folder. It runs no code of the student's: the checkpoint is loaded with
`weights_only=True` (`course.lm.checkpoint.load_checkpoint`), the weights go into the course's
reference `TransformerLM` (lesson 08's weight oracle guarantees that a learner's model computes
the same function with them), and the loss is computed here. The one line of JSON it prints is
the result; a problem is `{"error": "..."}` in one line, never a traceback.

Bits per byte: the mean cross-entropy (nats) of predicting each byte of non-overlapping windows
of `context_length + 1` bytes from the ones before it in its window, divided by ln 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

MAX_PARAMETERS = 200_000_000  # a config asking for more is refused before anything is allocated


def student_state(state: dict) -> dict:
    """Weight names as the reference model has them: lesson 08's `AssembledLM` stores
    `weights.blocks__0__norm1__weight`; a `TransformerLM` checkpoint is already right."""
    if state and all(k.startswith("weights.") for k in state):
        return {k.removeprefix("weights.").replace("__", "."): v for k, v in state.items()}
    return dict(state)


def evaluate(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from course.lm.checkpoint import load_checkpoint
    from solutions.kernels.model import TransformerLM

    torch.set_num_threads(1)
    ckpt = load_checkpoint(spec["checkpoint"])  # weights_only=True, finite weights checked
    config = ckpt["model_config"]
    config.dropout = 0.0
    config.attention = "reference"
    with torch.device("meta"):
        expected = TransformerLM(config)
    n_params = sum(p.numel() for p in expected.parameters())
    if n_params > MAX_PARAMETERS:
        raise ValueError(f"the config asks for {n_params:,} parameters (limit {MAX_PARAMETERS:,})")
    model = TransformerLM(config, seed=0)
    state = student_state(ckpt["model"])
    if config.tie_embeddings and "lm_head.weight" not in state and "tok_emb.weight" in state:
        state["lm_head.weight"] = state["tok_emb.weight"]
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} is {got[k]}, the config says {want[k]}")
        raise ValueError("weights do not match the config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    model.eval()
    data = torch.frombuffer(bytearray(Path(spec["heldout"]).read_bytes()), dtype=torch.uint8)
    window = min(config.context_length, int(spec.get("context_length", 256))) + 1
    n_windows = min(len(data) // window, int(spec.get("max_windows", 64)))
    if n_windows < 1:
        raise ValueError(f"the held-out text is shorter than one window of {window} bytes")
    idx = data[: n_windows * window].view(n_windows, window).long()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in idx.split(8):
            logits = model(batch[:, :-1]).double()
            if not torch.isfinite(logits).all():
                raise ValueError("the model's logits are not finite")
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total += loss.item()
            count += batch[:, 1:].numel()
    return {"bpb": total / count / math.log(2), "params": model.num_parameters(), "bytes": count}


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(Path(argv[0]).read_text())
        result = evaluate(spec)
    except Exception as exc:  # noqa: BLE001 - every problem becomes one line of the page
        message = str(exc).splitlines()[0] if str(exc) else ""
        result = {"error": f"{type(exc).__name__}: {message}"[:300]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
