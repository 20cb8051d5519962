r"""Run the last encoder layer of a first-token classifier on the first token only.

A BERT-style sequence classifier reads one row of its last hidden states: the pooler (BERT,
ERNIE) or the classification head (RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT) takes
position 0, the [CLS] / <s> token. In the last layer every other row is computed and thrown away.
Keys and values must still see every token, but everything on the query side is row-wise:

    last layer, h : (batch, seq, hidden)          first token only
    q  = h·Wq                (batch, seq, hidden)     q₀ = h[:, :1]·Wq                  (batch, 1, hidden)
    k, v = h·Wk, h·Wv        (batch, seq, hidden)     k, v = h·Wk, h·Wv   — every token, unchanged
    a  = softmax(q·kᵀ·s + M)·v                        a₀ = softmax(q₀·kᵀ·s + M[..., :1, :])·v
    o  = LN(a·Wo + h)                                 o₀ = LN(a₀·Wo + h[:, :1])
    y  = LN(FFN(o) + o)      (batch, seq, hidden)     y₀ = LN(FFN(o₀) + o₀)             (batch, 1, hidden)

Row i of softmax, of every Linear, LayerNorm, activation and dropout depends only on row i of its
input, so y₀ = y[:, :1] and the head's y[:, 0] is unchanged: the same logits, the same gradients
(rows 1… of q, o and y never reach the loss, so they contribute zero). Of the last layer's
matmuls (4·hidden² for q, k, v, o and 8·hidden² for the feed-forward, per token) only K and V stay
full-length: 5/6 of its work, forward and backward, is gone — 5/36 ≈ 14 % of a 6-layer model's.
Dropout masks get a different shape, so a training run draws different (equally distributed)
masks than the full layer would. Under gradient checkpointing this layer is not recomputed: what
it keeps for backward is one row per sequence plus K and V.

`first_token_only` installs this on the instance of the last layer (its `forward` attribute): no
class is patched, parameter names and state_dict keys stay the same, so checkpoints and
PEFT-format adapters do not change. It applies only to the stock transformers classes listed
below, checked module by module; anything else is left unchanged. At call time the layer falls
back to its full forward whenever another row may be read: `output_hidden_states` or
`output_attentions` requested, cross-attention or a cache, or an attention implementation whose
mask is not a dense (batch, 1, query, key) tensor (flash, flex).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# BERT-layout classifiers (layer = attention.self / attention.output / intermediate / output) →
# the module that reads position 0 of the last hidden states, and its stock class. The classes
# of one family share a prefix in one modeling module (BertLayer, BertSelfAttention, …); their
# layer code is copied from BERT's.
_BERT_LAYOUT_READERS = {
    "BertForSequenceClassification": ("bert.pooler", "BertPooler"),
    "ErnieForSequenceClassification": ("ernie.pooler", "ErniePooler"),
    "RobertaForSequenceClassification": ("classifier", "RobertaClassificationHead"),
    "XLMRobertaForSequenceClassification": ("classifier", "XLMRobertaClassificationHead"),
    "CamembertForSequenceClassification": ("classifier", "CamembertClassificationHead"),
    "ElectraForSequenceClassification": ("classifier", "ElectraClassificationHead"),
}
# DistilBertForSequenceClassification reads `hidden_state[:, 0]` in its own forward.
_DISTILBERT = "DistilBertForSequenceClassification"
# Attention implementations whose masks are None or dense (batch|1, 1|heads, query, key) tensors.
_DENSE_MASKS = (sdpa_mask, eager_mask)


def first_token_only(model: nn.Module) -> bool:
    """Make the last encoder layer of `model` compute position 0 only (see the module docstring).

    Call it on the model as loaded, before LoRA: adapters on the layer's Linears are fine (the
    layer calls its modules), but a RoBERTa-style head already wrapped as a module to save is no
    longer the stock class and is not recognised. Idempotent.

    Returns True when the model now runs its last layer on the first token, False when the model
    is not one this is exact for (it is then left unchanged).
    """
    found = _last_layer(model)
    if found is None:
        return False
    layer, forward = found
    installed = vars(layer).get("forward")
    if installed is not None:  # ours from an earlier call, or someone else's override: leave it
        return getattr(installed, "__func__", None) is forward
    layer.forward = types.MethodType(forward, layer)
    return True


def _last_layer(model: nn.Module) -> tuple[nn.Module, Callable] | None:
    """The last encoder layer and the forward to install on it, when every module between the
    layer and the logits is the stock class that reads position 0 only."""
    name, home = type(model).__name__, type(model).__module__
    if not home.startswith("transformers.models."):
        return None
    if name in _BERT_LAYOUT_READERS:
        return _bert_layout_last_layer(model, name.removesuffix("ForSequenceClassification"), home)
    if name == _DISTILBERT:
        return _distilbert_last_layer(model, home)
    return None


def _bert_layout_last_layer(model: nn.Module, prefix: str, home: str) -> tuple[nn.Module, Callable] | None:
    reader_path, reader_class = _BERT_LAYOUT_READERS[type(model).__name__]
    try:
        reader = model.get_submodule(reader_path)
    except AttributeError:  # e.g. the pooler set to None
        return None
    base = model.base_model
    layers = base.encoder.layer
    if len(layers) == 0 or not _is(reader, home, reader_class):
        return None
    layer = layers[-1]
    expected = [
        (base, "Model"),
        (base.encoder, "Encoder"),
        (layer, "Layer"),
        (layer.attention, "Attention"),
        (layer.attention.self, "SelfAttention"),
        (layer.attention.output, "SelfOutput"),
        (layer.intermediate, "Intermediate"),
        (layer.output, "Output"),
    ]
    if not all(_is(module, home, prefix + suffix) for module, suffix in expected):
        return None
    if layer.is_decoder or hasattr(layer, "crossattention"):  # causal masks, caches, cross-attention
        return None
    return layer, _bert_layout_forward


def _distilbert_last_layer(model: nn.Module, home: str) -> tuple[nn.Module, Callable] | None:
    base = model.base_model
    layers = base.transformer.layer
    if len(layers) == 0:
        return None
    layer = layers[-1]
    expected = [
        (base, "DistilBertModel"),
        (base.transformer, "Transformer"),
        (layer, "TransformerBlock"),
        (layer.attention, "DistilBertSelfAttention"),
        (layer.ffn, "FFN"),
    ]
    # FFN chunks along the sequence when asked to, which a 1-token sequence cannot be cut into.
    if not all(_is(module, home, name) for module, name in expected) or layer.ffn.chunk_size_feed_forward:
        return None
    return layer, _distilbert_forward


def _is(module: nn.Module, home: str, class_name: str) -> bool:
    """`module` is exactly transformers' `home.class_name` (not a subclass or a replacement)."""
    return type(module).__module__ == home and type(module).__name__ == class_name


def _bert_layout_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    cache: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """BertLayer.forward for position 0: hidden_states (batch, seq, hidden) → (batch, 1, hidden)."""
    attention = self.attention.self
    if encoder_hidden_states is not None or cache is not None or _reads_every_row(attention, attention_mask, kwargs):
        return type(self).forward(
            self,
            hidden_states,
            attention_mask,
            encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            cache=cache,
            **kwargs,
        )
    context = _first_token_attention(
        attention, attention.query, attention.key, attention.value, hidden_states, attention_mask, kwargs
    )
    attention_output = self.attention.output(context, hidden_states[:, :1])
    return self.output(self.intermediate(attention_output), attention_output)


def _distilbert_forward(
    self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
) -> torch.Tensor:
    """TransformerBlock.forward for position 0: hidden_states (batch, seq, dim) → (batch, 1, dim)."""
    attention = self.attention
    if _reads_every_row(attention, attention_mask, kwargs):
        return type(self).forward(self, hidden_states, attention_mask, **kwargs)
    context = _first_token_attention(
        attention, attention.q_lin, attention.k_lin, attention.v_lin, hidden_states, attention_mask, kwargs
    )
    attention_output = self.sa_layer_norm(attention.out_lin(context) + hidden_states[:, :1])
    return self.output_layer_norm(self.ffn(attention_output) + attention_output)


def _reads_every_row(attention: nn.Module, attention_mask: Any, kwargs: dict[str, Any]) -> bool:
    """Whether this call needs the full layer: all hidden states or attention maps are being
    recorded (asked in the call or in the config, as transformers' output capture decides), or
    the mask is not a dense tensor whose query rows can be sliced."""
    config = attention.config
    if any(kwargs.get(f"output_{k}", getattr(config, f"output_{k}", False)) for k in ("hidden_states", "attentions")):
        return True
    if ALL_MASK_ATTENTION_FUNCTIONS.get(config._attn_implementation) not in _DENSE_MASKS:
        return True
    return attention_mask is not None and not (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4)


def _first_token_attention(
    attention: nn.Module,
    query: nn.Module,
    key: nn.Module,
    value: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """softmax(q₀·Kᵀ·scaling + mask₀)·V per head, with the model's own attention function (and
    its dropout on the probabilities in training).

    hidden_states (batch, seq, hidden); q₀ (batch, heads, 1, head_dim); K, V (batch, heads, seq,
    head_dim); mask₀ the mask's first query row. Returns (batch, 1, heads·head_dim).
    """
    batch, seq = hidden_states.shape[:2]
    size = attention.attention_head_size
    q = query(hidden_states[:, :1]).view(batch, 1, -1, size).transpose(1, 2)
    k = key(hidden_states).view(batch, seq, -1, size).transpose(1, 2)
    v = value(hidden_states).view(batch, seq, -1, size).transpose(1, 2)
    eager = sys.modules[type(attention).__module__].eager_attention_forward
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    context, _ = interface(
        attention,
        q,
        k,
        v,
        None if attention_mask is None else attention_mask[:, :, :1],
        dropout=attention.dropout.p if attention.training else 0.0,
        scaling=attention.scaling,
        **kwargs,
    )
    return context.reshape(batch, 1, -1).contiguous()
