"""Tiny random models' ingredients: a deterministic byte-level tokenizer and small configs of every architecture."""
from __future__ import annotations

from otelab.models.presets import ARCHES

_TINY_TEXT = """\
The capital of France is Paris. The capital of Italy is Rome. The capital of Japan is Tokyo.
The Eiffel Tower is in Paris. The Colosseum is in Rome. Mount Fuji is in Japan.
Danielle Darrieux speaks French. Michel Rocard is a native speaker of French.
The mother tongue of Thomas Mann is German. Toko Yasuda plays the guitar.
Apple was founded by Steve Jobs. Microsoft was founded by Bill Gates.
The Space Needle is in Seattle. The Louvre is a museum in Paris.
Albert Einstein was a physicist. Marie Curie was a chemist and a physicist.
The official language of Brazil is Portuguese. The official language of Mexico is Spanish.
Lionel Messi plays football. Serena Williams plays tennis. Miles Davis plays the trumpet.
The river Thames flows through London. The Danube flows through Vienna and Budapest.
A cat is an animal. A rose is a flower. Water is a liquid. The sun is a star.
"""

TINY_VOCAB_SIZE = 384


def tiny_tokenizer():
    """A deterministic byte-level BPE tokenizer (384 tokens) trained in memory on a built-in text.

    Byte-level, so any text encodes without unknown tokens. ``<|endoftext|>`` is
    BOS, EOS and pad.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``padding_side="right"``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_TEXT.splitlines(), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=eos)
    wrapped.padding_side = "right"
    return wrapped


def tiny_config(arch: str, vocab: int, eos_id: int, n_layers: int, d_model: int, n_heads: int):
    from transformers import GPT2Config, GPTJConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if arch == "gpt2":
        return GPT2Config(n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=n_heads, **common)
    if arch == "gptj":
        return GPTJConfig(n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                          rotary_dim=d_model // n_heads // 2, tie_word_embeddings=False, **common)
    llama_like = dict(hidden_size=d_model, intermediate_size=3 * d_model, num_hidden_layers=n_layers,
                      num_attention_heads=n_heads, num_key_value_heads=max(1, n_heads // 2),
                      max_position_embeddings=256, **common)
    if arch == "llama":
        return LlamaConfig(tie_word_embeddings=True, **llama_like)  # tied, like SmolLM2
    if arch == "qwen2":
        return Qwen2Config(tie_word_embeddings=False, **llama_like)
    raise ValueError(f"unknown tiny arch {arch!r}; choose one of {ARCHES}")
