"""A student with its own vocabulary: its tokenizer (an existing one, or one trained on the
distillation examples with the ``tokenizers`` library) and its new word embeddings.

A 3 x 384 student of MiniLM keeps 11.7M of its 17.4M parameters in BERT's 30,522 word
embeddings; an 8,000-token vocabulary trained on the task's text cuts them to 3.1M. The trained
tokenizer keeps the teacher's special tokens and its post-processing (the [CLS] ... [SEP]
template, token type ids), so the student's inputs look like the teacher's; it is saved with the
student, whose folder loads with plain ``AutoTokenizer`` / ``AutoModel.from_pretrained``.

New embeddings (``embeddings: mean``) follow Fast Vocabulary Transfer (Gee et al., 2022): a
token the teacher also has (the same text, at a word start or inside a word alike) keeps its
row; any other token's row is the mean of the rows of the teacher's pieces of its text (a
word-inner piece such as ``##ness`` split by the teacher as a word-inner piece too); special
tokens take the teacher's special tokens of the same role. The rows come from the student's own
embedding matrix before the change, which ``init: teacher`` copied from the teacher and
``init: pruned`` narrowed from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdformer.config import ConfigError, VocabularyConfig
from kdformer.models import load_tokenizer

SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
"""Special tokens a trained vocabulary takes from the teacher, in the order of their ids."""
ROLE_FALLBACKS = {"cls_token": "bos_token", "sep_token": "eos_token", "bos_token": "cls_token",
                  "eos_token": "sep_token"}  # fmt: skip
DEFAULT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                    "sep_token": "[SEP]", "mask_token": "[MASK]"}  # fmt: skip
RECORD = "vocabulary.json"
"""What a trained vocabulary's folder records of how it was made (reused when all match)."""


def backend_json(tokenizer: Any) -> dict[str, Any]:
    """A fast tokenizer's pipeline (normalizer, pre-tokenizer, model, post-processor) as JSON."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: cross-tokenizer distillation "
            "needs fast tokenizers (character offsets) on both sides"
        )
    return json.loads(backend.to_str())


def lowercases(tokenizer: Any) -> bool:
    """Whether a fast tokenizer lowercases its input."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer is not None and normalizer.normalize_str("AbC") == "abc"


def special_tokens(teacher: Any) -> dict[str, str]:
    """The special tokens a trained vocabulary takes: the teacher's, by role."""
    out = {}
    for role in SPECIAL_ROLES:
        value = getattr(teacher, role, None) or getattr(teacher, ROLE_FALLBACKS.get(role, ""), None)
        out[role] = str(value) if value else DEFAULT_SPECIALS[role]
    return out


def _remap_specials(value: Any, ids: dict[str, int]) -> Any:
    """A post-processor's JSON with its special tokens' ids replaced by ``ids`` (by text)."""
    if isinstance(value, dict):
        value = {k: _remap_specials(v, ids) for k, v in value.items()}
        tokens = value.get("tokens")
        if isinstance(tokens, list) and isinstance(value.get("ids"), list):
            value["ids"] = [ids[t] for t in tokens]
        return value
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
            return [value[0], ids[value[0]]]
        return [_remap_specials(v, ids) for v in value]
    return value


def post_processor(teacher: Any, specials: dict[str, str], ids: dict[str, int]) -> Any:
    """The teacher's post-processing (its [CLS] ... [SEP] template and token type ids) with
    the new vocabulary's ids; a BERT template when the teacher has none."""
    teacher_json = backend_json(teacher).get("post_processor")
    if teacher_json is None:
        cls, sep = specials["cls_token"], specials["sep_token"]
        teacher_json = {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": cls, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": sep, "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": cls, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": sep, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": sep, "type_id": 1}},
            ],
            "special_tokens": {t: {"id": t, "ids": [ids[t]], "tokens": [t]} for t in (cls, sep)},
        }
    try:
        return _remap_specials(teacher_json, ids)
    except KeyError as exc:
        raise ConfigError(
            f"the teacher's tokenizer adds the special token {exc} to its inputs, which the "
            f"trained vocabulary lacks; give student.vocabulary an existing tokenizer instead"
        ) from None


def train_tokenizer(texts: Iterable[str], config: VocabularyConfig, teacher: Any) -> Any:
    """A fast tokenizer trained on ``texts`` as ``config`` says (wordpiece, bpe or unigram),
    with the teacher's special tokens, post-processing, input names and length limit."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    kind = config.train
    lowercase = lowercases(teacher) if config.lowercase is None else config.lowercase
    specials = special_tokens(teacher)
    listed = list(dict.fromkeys(specials.values()))
    common = {"vocab_size": config.size, "special_tokens": listed, "show_progress": False}
    if kind == "wordpiece":
        backend = Tokenizer(models.WordPiece(unk_token=specials["unk_token"]))
        backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        trainer: Any = trainers.WordPieceTrainer(
            min_frequency=config.min_frequency, continuing_subword_prefix="##", **common
        )
    elif kind == "bpe":
        backend = Tokenizer(models.BPE())
        steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            min_frequency=config.min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            **common,
        )
    elif kind == "unigram":
        backend = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(unk_token=specials["unk_token"], **common)
    else:
        raise ConfigError(f"unknown vocabulary kind {kind!r}; valid: wordpiece, bpe, unigram")
    backend.train_from_iterator(texts, trainer=trainer)
    ids = {token: backend.token_to_id(token) for token in listed}
    pipeline = json.loads(backend.to_str())
    processor = post_processor(teacher, specials, ids)
    if kind == "bpe":  # offsets without the space before a word
        trim = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                "use_regex": True}  # fmt: skip
        processor = {"type": "Sequence", "processors": [trim, processor]}
    pipeline["post_processor"] = processor
    backend = Tokenizer.from_str(json.dumps(pipeline))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=teacher.model_max_length,
        model_input_names=list(teacher.model_input_names),
        padding_side="right",
        **specials,
    )


def existing_tokenizer(name: str) -> Any:
    """A fast tokenizer by folder (a model's, or a tokenizer's alone), short name or hub name."""
    folder = Path(name).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"could not load the tokenizer in {folder}: {exc}") from None
    else:
        tokenizer = load_tokenizer(name)
    backend_json(tokenizer)  # refuses a slow tokenizer
    return tokenizer


def texts_fingerprint(texts: Iterable[str]) -> tuple[str, list[str]]:
    """A hash of the texts, and the texts (read once)."""
    listed = [t for t in texts if t]
    digest = hashlib.sha1()
    for text in listed:
        digest.update(text.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest(), listed


def student_tokenizer(
    config: VocabularyConfig,
    teacher: Any,
    texts: Callable[[], Iterable[str]],
    folder: str | Path | None = None,
    log: Callable[[str], Any] = print,
) -> Any:
    """The student's tokenizer: an existing one (``config.tokenizer``), or one trained on
    ``texts()`` and saved to ``folder`` (reused there when the settings, the teacher's special
    tokens and the texts are the same). A trained one is loaded back from its folder, as the
    student's own folder will load it."""
    if config.tokenizer is not None:
        return existing_tokenizer(config.tokenizer)
    from transformers import AutoTokenizer

    digest, listed = texts_fingerprint(texts())
    if not listed:
        raise ConfigError("student.vocabulary.train: the distillation examples hold no text")
    record = {
        "train": config.train,
        "size": config.size,
        "lowercase": config.lowercase,
        "min_frequency": config.min_frequency,
        "specials": special_tokens(teacher),
        "texts": digest,
        "count": len(listed),
    }
    if folder is not None:
        folder = Path(folder)
        stored = folder / RECORD
        if stored.is_file() and json.loads(stored.read_text(encoding="utf-8")) == record:
            return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_tokenizer(listed, config, teacher)
    log(
        f"student vocabulary: {config.train} trained on {len(listed):,} texts, "
        f"{len(tokenizer):,} tokens (asked {config.size:,})"
    )
    if folder is None:
        return tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return AutoTokenizer.from_pretrained(folder)


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers tokenise alike (same vocabulary and pipeline)."""
    if a is b:
        return True
    if a.get_vocab() != b.get_vocab():
        return False
    try:
        return backend_json(a) == backend_json(b)
    except ConfigError:
        return True


# --------------------------------------------------------------------------------------------
# Token texts: what a token spells, and whether it starts a word
# --------------------------------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class TokenForms:
    """How one tokenizer writes tokens: ``surface(token)`` gives (text, starts a word) and
    ``token(text, starts)`` the token that writes it (or None), for WordPiece (``##``
    continuations), byte-level BPE (``Ġ`` before a word) and Metaspace (``▁``) vocabularies."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        pipeline = backend_json(tokenizer)
        model = pipeline.get("model") or {}
        parts = [pipeline.get("pre_tokenizer"), pipeline.get("decoder")]
        kinds = set()
        replacement = "▁"
        for part in parts:
            for item in (
                (part or {}).get("pretokenizers", [])
                + (part or {}).get("decoders", [])
                + [part or {}]
            ):
                kinds.add(item.get("type"))
                replacement = item.get("replacement", replacement)
        self.prefix = model.get("continuing_subword_prefix") or (
            "##" if model.get("type") == "WordPiece" else None
        )
        self.byte_level = "ByteLevel" in kinds
        self.metaspace = replacement if "Metaspace" in kinds else None
        self.bytes = _byte_decoder() if self.byte_level else {}
        self.encoder = {b: c for c, b in self.bytes.items()}
        self.vocab = tokenizer.get_vocab()

    @property
    def style(self) -> tuple[Any, ...]:
        """How tokens mark word starts and insides: equal styles write equal texts alike."""
        return (self.prefix, self.byte_level, self.metaspace)

    def surface(self, token: str) -> tuple[str, bool]:
        """What ``token`` spells and whether it starts a word (punctuation always does, as
        BERT splits it off)."""
        text, starts = self._surface(token)
        return text, starts or not any(c.isalnum() for c in text)

    def _surface(self, token: str) -> tuple[str, bool]:
        if self.byte_level:
            raw = bytes(self.bytes.get(c, ord("?")) for c in token)
            text = raw.decode("utf-8", errors="ignore")
            return text.strip(), text.startswith(" ")
        if self.metaspace is not None:
            return token.replace(self.metaspace, " ").strip(), token.startswith(self.metaspace)
        if self.prefix and token.startswith(self.prefix) and len(token) > len(self.prefix):
            return token[len(self.prefix) :], False
        return token, True

    def token(self, text: str, starts: bool) -> str | None:
        if self.byte_level:
            written = "".join(self.encoder[b] for b in ((" " if starts else "") + text).encode())
        elif self.metaspace is not None:
            written = (self.metaspace if starts else "") + text
        elif self.prefix:
            written = text if starts else self.prefix + text
        else:
            written = text
        return written if written in self.vocab else None


def wordpiece_split(text: str, vocab: dict[str, int], prefix: str, starts: bool) -> list[int]:
    """Greedy longest-match WordPiece of one word (BERT's rule), from a word start or, with
    ``starts`` false, as the inside of a word; [] when some part matches nothing."""
    ids, at = [], 0
    while at < len(text):
        for end in range(len(text), at, -1):
            piece = text[at:end] if (starts and at == 0) else prefix + text[at:end]
            if piece in vocab:
                ids.append(vocab[piece])
                at = end
                break
        else:
            return []
    return ids


def teacher_pieces(student: Any, teacher: Any) -> list[list[int]]:
    """For every student token id, the teacher token ids whose embedding rows it starts from:
    the same token when the teacher has it; the teacher's special token of the same role; else
    the teacher's pieces of its text (inside a word for a word-inner piece), [] when none."""
    s_forms, t_forms = TokenForms(student), TokenForms(teacher)
    t_vocab = t_forms.vocab
    roles = {}
    for role in (*SPECIAL_ROLES, "bos_token", "eos_token"):
        s_token = getattr(student, role, None)
        t_token = getattr(teacher, role, None) or getattr(
            teacher, ROLE_FALLBACKS.get(role, ""), None
        )
        if s_token and t_token and str(t_token) in t_vocab:
            roles.setdefault(str(s_token), [t_vocab[str(t_token)]])
    normalizer = teacher.backend_tokenizer.normalizer
    same_style = s_forms.style == t_forms.style
    tokens = {i: t for t, i in student.get_vocab().items()}
    out: list[list[int]] = []
    pending: dict[int, str] = {}
    for index in range(len(student)):
        token = tokens.get(index)
        if token is None:
            out.append([])
            continue
        if token in roles:
            out.append(roles[token])
            continue
        if same_style and token in t_vocab:
            out.append([t_vocab[token]])
            continue
        text, starts = s_forms.surface(token)
        same = t_forms.token(text, starts) if text else None
        if same is not None:
            out.append([t_vocab[same]])
            continue
        if not text:
            out.append([])
            continue
        if t_forms.prefix and not t_forms.byte_level and t_forms.metaspace is None:
            word = normalizer.normalize_str(text) if normalizer is not None else text
            out.append(wordpiece_split(word, t_vocab, t_forms.prefix, starts))
            if out[-1] or not starts:
                continue
            out.pop()
        out.append([])
        pending[index] = (" " if starts and t_forms.byte_level else "") + text
    if pending:
        encoded = teacher(list(pending.values()), add_special_tokens=False)["input_ids"]
        for index, ids in zip(pending, encoded):
            out[index] = [i for i in ids if i != teacher.unk_token_id] or list(ids)
    return out


# --------------------------------------------------------------------------------------------
# Word embeddings
# --------------------------------------------------------------------------------------------


def adopt_vocabulary(
    model: nn.Module, student: Any, teacher: Any, embeddings: str = "mean"
) -> dict[str, int]:
    """Give ``model`` (a student whose word embeddings are rows by the teacher's vocabulary)
    the vocabulary of the ``student`` tokenizer: ``mean``: each row from the teacher rows
    :func:`teacher_pieces` names (a token with none takes the unknown token's row); ``random``:
    the model's own initialisation. Sets the config's vocabulary size and padding id. Returns
    counts: tokens, tokens the teacher shares, tokens from pieces, tokens with no piece."""
    old = model.get_input_embeddings().weight.detach().clone()
    size = len(student)
    pieces = teacher_pieces(student, teacher) if embeddings == "mean" else []
    model.resize_token_embeddings(size, mean_resizing=False)
    layer = model.get_input_embeddings()
    pad = student.pad_token_id
    counts = {"tokens": size, "shared": 0, "pieces": 0, "none": 0}
    with torch.no_grad():
        if embeddings == "mean":
            fallback = teacher.unk_token_id if teacher.unk_token_id is not None else 0
            flat, offsets = [], []
            for ids in pieces:
                counts["shared" if len(ids) == 1 else "pieces" if ids else "none"] += 1
                offsets.append(len(flat))
                flat += [i for i in ids if i < old.shape[0]] or [fallback]
            rows = torch.nn.functional.embedding_bag(
                torch.tensor(flat), old.float(), torch.tensor(offsets), mode="mean"
            )
            layer.weight.copy_(rows.to(layer.weight.dtype))
        else:
            std = float(getattr(model.config, "initializer_range", 0.02))
            layer.weight.normal_(0.0, std)
            if pad is not None:
                layer.weight[pad].zero_()
    if pad is not None:
        layer.padding_idx = pad
        model.config.pad_token_id = pad
    model.config.vocab_size = size
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return counts
