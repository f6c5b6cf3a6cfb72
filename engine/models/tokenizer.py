"""One tokenizer type for every model source, on the `tokenizers` library.

GGUF files carry no ``tokenizer.json``: the vocabulary, merges, token types and
special ids live in metadata under llama.cpp's names. ``from_gguf_metadata``
rebuilds the tokenizer the file describes (byte-level BPE like SmolLM2's, or
SentencePiece-style BPE with byte fallback like Gemma's), with the
pre-tokenizer that ``tokenizer.ggml.pre`` names. HF/MLX directories use their
``tokenizer.json`` directly. Either way the result is cached as JSON next to
the converted weights, so later loads skip the rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as _HFTokenizer

from engine.errors import InputError, ModelLoadError

_END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end_of_text|>", "<eos>")

# llama.cpp token types
_CONTROL, _USER_DEFINED = 3, 4

_GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level_pretok(pre: str | None) -> Any:
    """The pre-tokenizer llama.cpp uses for ``tokenizer.ggml.pre`` (byte-level vocabularies)."""
    bl_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bl_plain = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        # digits one by one, then the GPT-2 split (SmolLM2's own tokenizer.json)
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl_regex])
    if pre in ("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated"), bl_plain])
    if pre in ("qwen2", "deepseek-r1-qwen"):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated"), bl_plain])
    if pre in (None, "default", "gpt-2", "gpt2", "olmo", "jais"):
        return bl_regex
    raise ModelLoadError(
        f"unsupported GGUF pre-tokenizer {pre!r} (supported: smollm, starcoder, llama3, qwen2, gpt-2, default)"
    )


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _spm_merges(tokens: Sequence[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges implied by a SentencePiece vocabulary; earlier tokens merge first (Gemma order)."""
    merges: list[tuple[int, int, int, str, str]] = []
    for idx, piece in enumerate(tokens):
        if len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            li = vocab.get(left)
            ri = vocab.get(right)
            if li is not None and ri is not None:
                merges.append((idx, li, ri, left, right))
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in merges]


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the facts analyses need (special ids, spelling, chat template)."""

    def __init__(self, backend: _HFTokenizer, *, kind: str, bos_id: int | None, eos_ids: Sequence[int],
                 pad_id: int | None, add_bos: bool, chat_template: str | None) -> None:
        self.backend = backend
        self.kind = kind  # "byte_level" or "spm"
        self.bos_id = bos_id
        self.eos_ids = tuple(eos_ids)
        self.pad_id = pad_id
        self.add_bos = add_bos
        self.chat_template = chat_template
        # chat and base models end text with their own markers too: generation stops at any of them
        ends = list(self.eos_ids)
        for marker in _END_MARKERS:
            tid = backend.token_to_id(marker)
            if tid is not None and tid not in ends:
                ends.append(tid)
        self.eos_ids = tuple(ends)
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token = backend.id_to_token(bos_id) if bos_id is not None else None
        self.eos_token = backend.id_to_token(self.eos_ids[0]) if self.eos_ids else None
        self._pieces: dict[int, str] = {}  # token id -> piece, filled as tables ask (at most the vocabulary)

    # -- encoding --------------------------------------------------------------------------
    @property
    def batch_pad_id(self) -> int:
        """The id that fills the short rows of a batch (the one convention: the model's pad token,
        else its first end-of-text token, else 0). Padded positions are masked out of attention and
        never read, so the choice changes no result; one convention keeps batches reproducible."""
        if self.pad_id is not None:
            return self.pad_id
        return self.eos_ids[0] if self.eos_ids else 0

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids; adds BOS when the model wants it and the text does not already start with it."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        want_bos = self.add_bos if add_bos is None else add_bos
        if want_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def piece(self, token_id: int) -> str:
        """The text one token stands for (e.g. ' Paris'), as shown in tables."""
        tid = int(token_id)
        text = self._pieces.get(tid)
        if text is None:
            text = self._pieces[tid] = self.backend.decode([tid], skip_special_tokens=False)
        return text

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.piece(i) for i in ids]

    def spell(self, text: str) -> str:
        """The vocabulary's own spelling of ``text`` (byte-level: Ġ for space; SentencePiece: ▁)."""
        if self.kind == "byte_level":
            table = _bytes_to_unicode()
            return "".join(table[b] for b in text.encode("utf-8"))
        return text.replace(" ", "\u2581")

    def lookup(self, text: str) -> tuple[int, list[int]]:
        """The token that tracking ``text`` follows: the exact vocab entry, else the first of its encoding.

        Returns (token_id, all_ids); ``len(all_ids) > 1`` means the string is several tokens.
        """
        if text == "":
            raise InputError("tracked token is empty")
        for spelled in (self.spell(text), text):
            tid = self.backend.token_to_id(spelled)
            if tid is not None:
                return tid, [tid]
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if not ids:
            raise InputError(f"token {text!r} encodes to nothing")
        return ids[0], ids

    # -- chat ------------------------------------------------------------------------------
    def apply_chat_template(self, prompt: str) -> str:
        if not self.chat_template:
            raise InputError("this model has no chat template; use --raw")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(msg: str) -> None:
            raise InputError(f"chat template error: {msg}")

        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=[{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def prepare(self, prompt: str, chat: bool) -> list[int]:
        """Ids for a prompt, through the chat template when ``chat`` (never doubling BOS)."""
        text = self.apply_chat_template(prompt) if chat else prompt
        return self.encode(text)

    # -- persistence -----------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        self.backend.save(str(directory / "tokenizer.json"))
        meta = {"kind": self.kind, "bos_id": self.bos_id, "eos_ids": list(self.eos_ids), "pad_id": self.pad_id,
                "add_bos": self.add_bos, "chat_template": self.chat_template}
        (directory / "lazarus_tokenizer.json").write_text(json.dumps(meta))

    @classmethod
    def load_saved(cls, directory: Path) -> Tokenizer:
        meta = json.loads((directory / "lazarus_tokenizer.json").read_text())
        backend = _HFTokenizer.from_file(str(directory / "tokenizer.json"))
        return cls(backend, **meta)


def from_gguf_metadata(meta: dict[str, Any]) -> Tokenizer:
    """Build the tokenizer a GGUF file's metadata describes."""
    model = meta.get("tokenizer.ggml.model")
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    types: list[int] = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    arch = meta.get("general.architecture")
    if model == "gpt2":
        kind = "byte_level"
        alphabet = set(_bytes_to_unicode().values())
        table = _bytes_to_unicode()
        vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            spelled = t if set(t) <= alphabet or types[i] == _CONTROL else "".join(table[b] for b in t.encode())
            vocab.setdefault(spelled, i)
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        backend = _HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _byte_level_pretok(meta.get("tokenizer.ggml.pre"))
        backend.decoder = decoders.ByteLevel()
    elif model == "llama":
        kind = "spm"
        if arch and arch.startswith("gemma"):
            # Gemma files store tokens of 2+ spaces with real spaces; its tokenizer spells them with ▁
            tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in tokens]
        vocab = {}
        for i, t in enumerate(tokens):
            vocab.setdefault(t, i)
        unk_id = meta.get("tokenizer.ggml.unknown_token_id")
        unk = tokens[unk_id] if unk_id is not None else None
        merges = _spm_merges(tokens, vocab)
        backend = _HFTokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
        norms: list[normalizers.Normalizer] = [normalizers.Replace(" ", "\u2581")]
        space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))  # llama.cpp's SPM default
        if space_prefix:
            norms.insert(0, normalizers.Prepend("\u2581"))
        backend.normalizer = normalizers.Sequence(norms)
        backend.pre_tokenizer = None
        backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
                                            + ([decoders.Strip(" ", 1, 0)] if space_prefix else []))
    else:
        raise ModelLoadError(f"unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)")

    # Control tokens stay whole and are special; user-defined ones stay whole too.
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == _CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == _USER_DEFINED]
    if special:
        backend.add_special_tokens(special)
    if user:
        backend.add_tokens(user)

    eos = meta.get("tokenizer.ggml.eos_token_id")
    eos_ids = [eos] if eos is not None else []
    eot = meta.get("tokenizer.ggml.eot_token_id")
    if eot is not None and eot not in eos_ids:
        eos_ids.append(eot)
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = model == "llama"
    return Tokenizer(backend, kind=kind, bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_ids=eos_ids,
                     pad_id=meta.get("tokenizer.ggml.padding_token_id"), add_bos=bool(add_bos),
                     chat_template=meta.get("tokenizer.chat_template"))


def from_hf_directory(path: Path) -> Tokenizer:
    """The tokenizer of an HF/MLX checkpoint directory (tokenizer.json + tokenizer_config.json)."""
    tj = path / "tokenizer.json"
    if not tj.exists():
        raise ModelLoadError(f"{path} has no tokenizer.json")
    backend = _HFTokenizer.from_file(str(tj))
    cfg: dict[str, Any] = {}
    if (path / "tokenizer_config.json").exists():
        cfg = json.loads((path / "tokenizer_config.json").read_text())
    template = cfg.get("chat_template")
    if template is None and (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text()

    def tok_id(value: Any) -> int | None:
        if isinstance(value, dict):
            value = value.get("content")
        return backend.token_to_id(value) if isinstance(value, str) else None

    dec = json.loads(backend.to_str()).get("decoder") or {}
    kind = "byte_level" if "ByteLevel" in json.dumps(dec) else "spm"
    bos = tok_id(cfg.get("bos_token"))
    eos_ids = [i for i in [tok_id(cfg.get("eos_token"))] if i is not None]
    post = json.loads(backend.to_str()).get("post_processor") or {}
    add_bos = cfg.get("add_bos_token")
    if add_bos is None:
        add_bos = bos is not None and cfg.get("bos_token") is not None and "TemplateProcessing" in json.dumps(post)
    backend.no_padding()
    backend.no_truncation()
    return Tokenizer(backend, kind=kind, bos_id=bos, eos_ids=eos_ids, pad_id=tok_id(cfg.get("pad_token")),
                     add_bos=bool(add_bos), chat_template=template)
