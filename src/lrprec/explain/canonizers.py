"""Canonizers: rewrite a backbone into a flat list of LRP-ready layers, BatchNorm folded in.

LRP rules are defined on linear layers; a BatchNorm2d after a Conv2d is an affine map, so it
is folded into that convolution (w' = w·γ/σ, b' = (b − μ)·γ/σ + β, σ = √(var + eps)).
A residual block (ResNet) becomes a :class:`ResidualLayer`: its main branch and its shortcut
as layer lists of their own and the sum as an explicit step, whose relevance the engine
splits in proportion to the two summands (as zennit's ResNet canonizer makes the sum a
``Sum`` module under the ``Norm`` rule). Backbones other than the ``features → avgpool →
classifier`` layout list their modules in execution order with a ``leaves()`` method.

``canonize`` never touches the caller's model: it returns new layer objects whose weights
are *computed* from the caller's parameters on each call. Nothing is copied, so relevance
stays differentiable w.r.t. the real parameters (``create_graph=True``), and the model's
parameters, buffers, hooks and train/eval flags stay as they were. Explaining always uses
eval semantics (BatchNorm running statistics, no dropout). ``fold_batchnorm`` is the
module-level variant (on a deepcopy), for export or for other libraries.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrprec.errors import UsageError
from lrprec.explain import attnlrp
from lrprec.model.backbones import Backbone, FeatureBackbone
from lrprec.model.resnet import ResidualBlock
from lrprec.model.vit import EncoderBlock, Lambda


@dataclass
class ParamLayer:
    """A Conv2d or Linear (BatchNorm possibly folded in); ``params()`` gives the (folded) weight and bias."""

    name: str
    kind: str  # "conv2d" or "linear"
    params: Callable[[], tuple[Tensor, Tensor | None]]
    conv_args: dict = field(default_factory=dict)
    #: the modules whose own parameters and buffers ``params()`` reads (conv and its BatchNorm): the engine caches
    #: the detached (folded, rule-modified) weights per first owner while none of those tensors changes
    owners: tuple[nn.Module, ...] = ()

    def state_key(self) -> tuple:
        """Identifies the current values of everything ``params()`` reads (storage, version, dtype, device; BatchNorm eps)."""
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for m in self.owners
                     for t in (*m.parameters(recurse=False), *m.buffers(recurse=False))) + tuple(getattr(m, "eps", None) for m in self.owners)

    def apply(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        """The layer's linear map with weight ``w`` and bias ``b`` (possibly modified by a rule) applied to ``x``."""
        if self.kind == "conv2d":
            return F.conv2d(x, w, b, **self.conv_args)
        return F.linear(x, w, b)


@dataclass
class PassLayer:
    """A parameter-free layer: relevance passes via its ordinary gradient (ReLU, pooling, flatten, dropout)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    sign: str = "keep"  # "keep": sign of input preserved; "nonneg": output >= 0


@dataclass
class ResidualLayer:
    """out = main(x) + shortcut(x); an empty ``shortcut`` is the identity. Relevance of the sum is split
    between the summands in proportion to their values, ε-stabilized (``Composite.sum_epsilon``)."""

    name: str
    main: list
    shortcut: list


Layer = ParamLayer | PassLayer | ResidualLayer | attnlrp.NormLayer | attnlrp.EncoderLayer


def _linear_layer(name: str, m: nn.Linear) -> ParamLayer:
    return ParamLayer(name, "linear", lambda: (m.weight, m.bias), owners=(m,))


def _encoder_layer(name: str, block: EncoderBlock) -> attnlrp.EncoderLayer:
    """A ViT encoder block as AttnLRP steps: LayerNorms, attention (its in-projection one linear layer), MLP."""
    attn = block.self_attention
    qkv = ParamLayer(f"{name}.self_attention.in_proj", "linear", lambda: (attn.in_proj_weight, attn.in_proj_bias), owners=(attn,))
    return attnlrp.EncoderLayer(name, (
        attnlrp.NormLayer(f"{name}.ln_1", block.ln_1),
        attnlrp.AttentionLayer(f"{name}.self_attention", attn, qkv, _linear_layer(f"{name}.self_attention.out_proj", attn.out_proj)),
        attnlrp.NormLayer(f"{name}.ln_2", block.ln_2),
        attnlrp.MLPLayer(f"{name}.mlp", _linear_layer(f"{name}.mlp.0", block.mlp[0]), _linear_layer(f"{name}.mlp.3", block.mlp[3])),
    ))


def folded_conv_params(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(w', b') of the convolution followed by BatchNorm in eval mode, differentiable in both modules' parameters."""
    if bn.running_mean is None or bn.running_var is None:
        raise UsageError(f"cannot fold {bn}: it tracks no running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return conv.weight * scale.view(-1, 1, 1, 1), shift


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Modules in execution order for the layouts we can trace without running them."""
    if isinstance(module, FeatureBackbone):
        return []
    if hasattr(module, "leaves"):
        return [(f"{prefix}{name}", m) for name, m in module.leaves()]
    if isinstance(module, Backbone):
        # every Backbone computes classifier(flatten(avgpool(features(x)))) (overrides may only
        # change the memory format), so the layout is read off the modules without running them
        return (_leaves(module.features, f"{prefix}features.") + _leaves(module.avgpool, f"{prefix}avgpool")
                + [(f"{prefix}flatten", nn.Flatten())] + _leaves(module.classifier, f"{prefix}classifier."))
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _leaves(child, f"{prefix}{name}.")
        return out
    return [(prefix.rstrip("."), module)]


def _conv_layer(name: str, conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> ParamLayer:
    if conv.padding_mode != "zeros":
        raise TypeError(f"{name}: padding_mode {conv.padding_mode!r} is not supported")
    args = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation, "groups": conv.groups}
    if bn is None:
        return ParamLayer(name, "conv2d", lambda: (conv.weight, conv.bias), args, owners=(conv,))
    return ParamLayer(name, "conv2d", lambda: folded_conv_params(conv, bn), args, owners=(conv, bn))


def _pass_layer(name: str, m: nn.Module) -> PassLayer:
    if isinstance(m, nn.ReLU):
        return PassLayer(name, F.relu, "nonneg")
    if isinstance(m, nn.MaxPool2d):
        return PassLayer(name, lambda x: F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode))
    if isinstance(m, nn.AvgPool2d):
        return PassLayer(name, lambda x: F.avg_pool2d(x, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                      m.count_include_pad, m.divisor_override))
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return PassLayer(name, lambda x: F.adaptive_avg_pool2d(x, m.output_size))
    if isinstance(m, nn.AdaptiveMaxPool2d):
        return PassLayer(name, lambda x: F.adaptive_max_pool2d(x, m.output_size))
    if isinstance(m, nn.Flatten):
        return PassLayer(name, lambda x: torch.flatten(x, m.start_dim, m.end_dim))
    if isinstance(m, (nn.Dropout, nn.Identity)):
        return PassLayer(name, lambda x: x)
    raise TypeError(f"layer {name} ({type(m).__name__}) is not supported by the LRP engine")


def canonize(module: nn.Module) -> list[Layer]:
    """The module as LRP-ready layers: BatchNorm2d folded into the preceding Conv2d, containers flattened."""
    return _canonize_leaves(_leaves(module, ""))


def _canonize_leaves(leaves: list[tuple[str, nn.Module]]) -> list[Layer]:
    layers: list[Layer] = []
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        if isinstance(m, nn.Conv2d):
            nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
            bn = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            layers.append(_conv_layer(name, m, bn))
            i += 2 if bn is not None else 1
            continue
        if isinstance(m, ResidualBlock):
            layers.append(ResidualLayer(name, _canonize_leaves(m.main_leaves(f"{name}.")),
                                        _canonize_leaves(m.shortcut_leaves(f"{name}."))))
            layers.append(_pass_layer(f"{name}.relu", m.relu))
        elif isinstance(m, EncoderBlock):
            layers.append(_encoder_layer(name, m))
        elif isinstance(m, nn.LayerNorm):
            layers.append(attnlrp.NormLayer(name, m))
        elif isinstance(m, Lambda):
            layers.append(PassLayer(name, m.fn))
        elif isinstance(m, nn.Linear):
            layers.append(_linear_layer(name, m))
        elif isinstance(m, nn.BatchNorm2d):
            raise TypeError(f"{name}: BatchNorm2d must directly follow a Conv2d to be folded")
        else:
            layers.append(_pass_layer(name, m))
        i += 1
    return layers


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A deepcopy of ``module`` in eval mode with every Conv2d→BatchNorm2d pair folded (BN becomes Identity)."""
    out = copy.deepcopy(module).eval()
    for seq in [m for m in out.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev, cur in zip(names, names[1:]):
            conv, bn = seq._modules[prev], seq._modules[cur]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                with torch.no_grad():
                    w, b = folded_conv_params(conv, bn)
                    conv.weight.copy_(w)
                    if conv.bias is None:
                        conv.bias = nn.Parameter(b.clone())
                    else:
                        conv.bias.copy_(b)
                seq._modules[cur] = nn.Identity()
    return out
