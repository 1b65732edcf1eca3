"""The router's modules (AnyStory §3.3). torch and diffusers load on first use (the layering rule):
the classes are made by ``classes()`` and reachable as module attributes (``modules.Router``).

Per forward, one ``RouteBank`` carries what the UNet's attention processors share: each subject's
routing feature R_i and CLIP tokens E_i (the background's, from a black image, last), the
validity of each route, the ReferenceNet's self-attention inputs, and the maps each cross-attention
layer predicts. Every ``attn2`` (cross-attention) runs ``RoutedCrossAttention``: the router
predicts the coarse map <R W, Z W'>, refines R by a masked cross-attention on the latent Z (each
route sees only the pixels the coarse map gives it, Mask2Former's rule; all pixels when it gets
none), predicts the refined maps M_i = softmax over routes of <R' W, Z W'>, and injects E_i by
decoupled cross-attention restricted to the 0/1 map sigma(M_i) (argmax + one-hot; a straight-
through Gumbel-softmax in training). Every ``attn1`` of the denoising UNet runs
``BiasedReferenceAttention``: keys and values over its own tokens and each subject's ReferenceNet
tokens, with the bias [0, g(M_1)+gamma, ...] from the previous cross-attention layer's 0/1 maps
(g = 0 where the map is 1, -inf elsewhere); the first one has no previous layer and attends
over its own tokens only (the paper leaves that layer's reference features out).

Padding (batches of 2, 3 and 4 subjects): subjects are stacked to S slots with ``subject_valid``;
an invalid slot's routing logits are -inf before the softmax over routes (its M_i is 0 everywhere,
it never wins the argmax, and its Gumbel draw cannot pick it), so its E_i gets no pixels, its
reference tokens get -inf bias, and the loss skips it. The background route is always valid.

Maps are dicts keyed by processor name and overwritten per name (not appended), and the Gumbel
noise of a layer is drawn from a generator seeded by (the step's seed, the layer), so gradient
checkpointing, which re-runs a block's forward in backward, recomputes the same maps."""
from __future__ import annotations

import functools
import zlib
from types import SimpleNamespace

from train.models.standardizer.modules import grid_of, parameter_key


def forward_order(names) -> list[str]:
    """Processor names in the order a UNet2DConditionModel runs them: down blocks, mid, up blocks;
    within each by block, attention and transformer-block index (``attn_processors`` lists the
    mid block last)."""
    section = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}

    def key(name):
        parts = name.split(".")
        return (section[parts[0]], *(int(p) for p in parts if p.isdigit()))
    return sorted(names, key=key)


def cross_attention_names(unet) -> list[str]:
    return forward_order(n for n in unet.attn_processors if n.endswith("attn2.processor"))


class RouteBank:
    """What one forward shares between the processors (see the module docstring)."""

    def __init__(self):
        self.reset(None)

    def reset(self, latent_hw, routing=None, tokens=None, valid=None, reference_keep=None, gumbel_seed=None,
              hard=None) -> None:
        self.latent_hw = latent_hw
        self.routing = routing                # B x (S+1) x d_r
        self.tokens = tokens                  # B x (S+1) x m x D: E_i, the background's last
        self.valid = valid                    # B x (S+1) bool
        self.reference_keep = reference_keep  # B bool: False where subject conditions are dropped
        self.gumbel_seed = gumbel_seed        # None: argmax one-hot (inference)
        self.hard = hard                      # training: the Gumbel straight-through; else argmax
        self.reference: dict = {}             # attn1 name -> (B*S) x hw x c from the ReferenceNet
        self.maps: dict = {}                  # attn2 name -> B x (S+1) x hw, soft M
        self.binary: dict = {}                # attn2 name -> B x (S+1) x hw, sigma(M)
        self.coarse: dict = {}                # attn2 name -> B x (S+1) x hw, the coarse map (softmax)


def attention(attn, query, key, value, bias=None):
    """Multi-head scaled-dot-product attention with ``attn``'s heads: B x N x C tensors -> B x N x C."""
    import torch.nn.functional as F

    b, heads = query.shape[0], attn.heads
    dim = key.shape[-1] // heads

    def split(x):
        return x.view(x.shape[0], -1, heads, dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=bias)
    return out.transpose(1, 2).reshape(b, -1, heads * dim).to(query.dtype)


class RoutedCrossAttention:
    """attn2 of the denoising UNet: text attention + eta * sum_i sigma(M_i) * attention(Q, E_i W^k, E_i W^v)."""

    def __init__(self, name: str, bank: RouteBank, router, subject_encoder, eta: float):
        self.name, self.bank, self.router, self.subject_encoder, self.eta = name, bank, router, subject_encoder, eta

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        bank, key = self.bank, parameter_key(self.name)
        query = attn.to_q(hidden_states)
        text = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        out = attention(attn, query, attn.to_k(text), attn.to_v(text))
        if bank.routing is not None:
            soft, coarse, logits = self.router.route(key, hidden_states, bank.routing, bank.valid)
            binary = self.router.binary(logits, bank.gumbel_seed, self.name) if bank.hard else \
                self.router.argmax(soft)
            bank.maps[self.name], bank.coarse[self.name], bank.binary[self.name] = soft, coarse, binary
            b, routes, m, d = bank.tokens.shape
            tokens = bank.tokens.to(hidden_states.dtype).reshape(b * routes, m, d)
            k_ip, v_ip = self.subject_encoder.keys_values(key, tokens)
            q = query.repeat_interleave(routes, dim=0)
            injected = attention(attn, q, k_ip, v_ip).view(b, routes, *query.shape[1:])
            out = out + self.eta * (binary.to(out.dtype).unsqueeze(-1) * injected).sum(1)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class BiasedReferenceAttention:
    """attn1 of the denoising UNet: self-attention over [Z, G_1 .. G_S] with the bias of Eq. 7 from
    the previous cross-attention layer's 0/1 maps (resized, nearest, to this layer's grid)."""

    def __init__(self, name: str, bank: RouteBank, previous: str | None, gamma: float):
        self.name, self.bank, self.previous, self.gamma = name, bank, previous, gamma

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        import torch
        import torch.nn.functional as F

        bank = self.bank
        context, bias = hidden_states, None
        if self.previous is not None and self.name in bank.reference and self.previous in bank.binary:
            b, n, c = hidden_states.shape
            subjects = bank.valid.shape[1] - 1
            h, w = grid_of(n, *bank.latent_hw)
            binary = bank.binary[self.previous][:, :subjects]                    # B x S x hw'
            hp, wp = grid_of(binary.shape[-1], *bank.latent_hw)
            binary = F.interpolate(binary.reshape(b, subjects, hp, wp).float(), (h, w), mode="nearest")
            allowed = (binary.flatten(2) > 0.5) & bank.valid[:, :subjects, None] & bank.reference_keep[:, None, None]
            reference = bank.reference[self.name].to(hidden_states.dtype)        # (B*S) x hw_ref x c
            n_ref = reference.shape[1]                                           # the subject's own size
            context = torch.cat([hidden_states, reference.reshape(b, subjects * n_ref, c)], dim=1)
            subject_bias = torch.where(allowed, self.gamma, float("-inf"))        # B x S x hw (query u)
            subject_bias = subject_bias.transpose(1, 2).repeat_interleave(n_ref, dim=2)  # B x hw x S*hw_ref
            bias = torch.cat([torch.zeros(b, n, n, device=hidden_states.device), subject_bias], dim=2)
            bias = bias.unsqueeze(1).to(hidden_states.dtype)
        out = attention(attn, attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), bias)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class ReferenceWriter:
    """attn1 of the ReferenceNet: stores its input tokens for the denoising UNet, then attends as usual."""

    def __init__(self, name: str, bank: RouteBank):
        from diffusers.models.attention_processor import AttnProcessor2_0
        self.name, self.bank, self.attend = name, bank, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        self.bank.reference[self.name] = hidden_states
        return self.attend(attn, hidden_states, None, attention_mask, temb)


def layer_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63


@functools.cache
def classes() -> SimpleNamespace:
    import torch
    import torch.nn.functional as F
    from diffusers import ModelMixin
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from torch import nn

    class QFormerLayer(nn.Module):
        """Queries: self-attention, cross-attention to the image tokens, feed-forward (pre-norm)."""

        def __init__(self, width: int, context_width: int, heads: int):
            super().__init__()
            self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
            self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
            self.cross_attention = nn.MultiheadAttention(width, heads, kdim=context_width, vdim=context_width,
                                                         batch_first=True)
            self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

        def forward(self, queries, context):
            x = self.norm1(queries)
            queries = queries + self.self_attention(x, x, x, need_weights=False)[0]
            queries = queries + self.cross_attention(self.norm2(queries), context, context, need_weights=False)[0]
            return queries + self.feed_forward(self.norm3(queries))

    class QFormer(nn.Module):
        """``queries`` learned queries read CLIP's image tokens through ``depth`` layers -> queries x out_width."""

        def __init__(self, queries: int, width: int, context_width: int, out_width: int, depth: int = 4,
                     heads: int = 4):
            super().__init__()
            self.queries = nn.Parameter(torch.randn(1, queries, width) * width ** -0.5)
            self.layers = nn.ModuleList(QFormerLayer(width, context_width, heads) for _ in range(depth))
            self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out_width))

        def forward(self, image_tokens):
            queries = self.queries.expand(image_tokens.shape[0], -1, -1).to(image_tokens.dtype)
            for layer in self.layers:
                queries = layer(queries, image_tokens)
            return self.out(queries)

    class SubjectEncoder(ModelMixin, ConfigMixin):
        """The CLIP branch of AnyStory's subject encoder (frozen while the router trains): a subject
        QFormer (``tokens`` queries, ``depth`` layers) on CLIP's image tokens -> E_i, and per
        cross-attention layer (``layers``: key -> query width) the decoupled keys and values
        W^k_ip, W^v_ip of IP-Adapter."""

        @register_to_config
        def __init__(self, layers: dict | None = None, clip_width: int = 1280, context_width: int = 2048,
                     tokens: int = 4, width: int = 768, depth: int = 4, heads: int = 8):
            super().__init__()
            layers = dict(sorted((layers or {}).items()))
            self.qformer = QFormer(tokens, width, clip_width, context_width, depth, heads)
            self.to_k_ip = nn.ModuleDict({k: nn.Linear(context_width, c, bias=False) for k, c in layers.items()})
            self.to_v_ip = nn.ModuleDict({k: nn.Linear(context_width, c, bias=False) for k, c in layers.items()})

        def forward(self, image_tokens):
            return self.qformer(image_tokens)

        def keys_values(self, key: str, tokens):
            return self.to_k_ip[key](tokens), self.to_v_ip[key](tokens)

    class RouteLayer(nn.Module):
        """One cross-attention layer's router: coarse map, masked cross-attention refinement, refined map."""

        def __init__(self, channels: int, width: int, heads: int):
            super().__init__()
            self.norm_latent = nn.LayerNorm(channels)
            self.coarse_route, self.coarse_latent = nn.Linear(width, width), nn.Linear(channels, width)
            self.norm_query = nn.LayerNorm(width)
            self.refine = nn.MultiheadAttention(width, heads, kdim=channels, vdim=channels, batch_first=True)
            self.norm_ff = nn.LayerNorm(width)
            self.feed_forward = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            self.route, self.latent = nn.Linear(width, width), nn.Linear(channels, width)
            self.heads = heads

        def forward(self, latents, routing, valid):
            """latents B x hw x c, routing B x R x d, valid B x R -> (soft M, coarse softmax, refined logits)."""
            z = self.norm_latent(latents.float())
            scale = routing.shape[-1] ** -0.5
            invalid = ~valid[..., None]
            coarse = torch.einsum("brd,bnd->brn", self.coarse_route(routing), self.coarse_latent(z)) * scale
            coarse = coarse.masked_fill(invalid, float("-inf")).softmax(1)
            winner = F.one_hot(coarse.argmax(1), coarse.shape[1]).transpose(1, 2).bool()   # B x R x hw
            blocked = ~winner & winner.any(-1, keepdim=True)                             # none won: see all
            blocked = blocked.repeat_interleave(self.heads, dim=0)
            refined = routing + self.refine(self.norm_query(routing), z, z, attn_mask=blocked, need_weights=False)[0]
            refined = refined + self.feed_forward(self.norm_ff(refined))
            logits = torch.einsum("brd,bnd->brn", self.route(refined), self.latent(z)) * scale
            logits = logits.masked_fill(invalid, float("-inf"))
            return logits.softmax(1), coarse, logits

    class Router(ModelMixin, ConfigMixin):
        """What trains: the routing QFormer (one query, ``depth`` layers) on CLIP's image tokens -> R_i,
        and a RouteLayer per cross-attention layer (``layers``: key -> latent channels)."""

        @register_to_config
        def __init__(self, layers: dict | None = None, clip_width: int = 1280, width: int = 256, depth: int = 4,
                     heads: int = 4, tau: float = 1.0):
            super().__init__()
            layers = dict(sorted((layers or {}).items()))
            self.qformer = QFormer(1, width, clip_width, width, depth, heads)
            self.route_layers = nn.ModuleDict({k: RouteLayer(c, width, heads) for k, c in layers.items()})

        def forward(self, image_tokens):
            """CLIP image tokens (B x T x C) -> routing features B x d."""
            return self.qformer(image_tokens)[:, 0]

        def route(self, key, latents, routing, valid):
            return self.route_layers[key](latents, routing, valid)

        def binary(self, logits, seed, name):
            """Straight-through Gumbel-softmax over routes: one-hot forward, the soft sample's gradient."""
            generator = torch.Generator(logits.device).manual_seed(layer_seed(seed, name))
            uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-9, 1 - 1e-9)
            soft = ((logits - torch.log(-torch.log(uniform))) / self.config.tau).softmax(1)
            hard = F.one_hot(soft.argmax(1), soft.shape[1]).transpose(1, 2).to(soft.dtype)
            return hard - soft.detach() + soft

        @staticmethod
        def argmax(soft):
            """sigma(M) at inference: one-hot of the argmax over routes (an invalid route's M is 0)."""
            return F.one_hot(soft.argmax(1), soft.shape[1]).transpose(1, 2).to(soft.dtype)

    class RoutedUNet(nn.Module):
        """The frozen SDXL UNet (and ReferenceNet, or None) with the frozen subject encoder and the
        trainable router installed in its attention processors. ``forward`` predicts the noise and
        leaves the maps of every cross-attention layer in ``self.bank``."""

        def __init__(self, unet, subject_encoder, router, reference_unet=None, eta: float = 1.0, gamma: float = 0.0):
            super().__init__()
            self.unet, self.subject_encoder, self.router, self.reference_unet = unet, subject_encoder, router, reference_unet
            self.bank = RouteBank()
            self.cross_names = cross_attention_names(unet)
            processors = dict(unet.attn_processors)
            for name in self.cross_names:
                processors[name] = RoutedCrossAttention(name, self.bank, router, subject_encoder, eta)
            if reference_unet is not None:
                self_names = forward_order(n for n in unet.attn_processors if n.endswith("attn1.processor"))
                previous = {}
                for name in forward_order([*self_names, *self.cross_names]):  # attn1 of a block runs before its attn2
                    if name.endswith("attn1.processor"):
                        processors[name] = BiasedReferenceAttention(name, self.bank, previous.get("cross"), gamma)
                    else:
                        previous["cross"] = name
                reference_unet.set_attn_processor({n: ReferenceWriter(n, self.bank) if n.endswith("attn1.processor")
                                                   else p for n, p in reference_unet.attn_processors.items()})
            unet.set_attn_processor(processors)

        def forward(self, noisy_latents, timesteps, text_states, added_cond, subject_tokens, background_tokens,
                    subject_valid, keep=None, subject_latents=None, gumbel_seed=None):
            """subject_tokens: B x S x T x C CLIP image tokens of the segmented subjects; background_tokens:
            1 x T x C (a black image's); subject_valid: B x S (1 real, 0 padding); keep: B bool (False:
            subject conditions dropped, E_i replaced by the background's, no reference attention);
            subject_latents: B x S x 4 x h x w for the ReferenceNet; gumbel_seed: the step's seed
            (training: straight-through Gumbel), None (inference: argmax)."""
            b, s = subject_tokens.shape[:2]
            tokens = torch.cat([subject_tokens, background_tokens.expand(b, 1, -1, -1)], dim=1)   # B x R x T x C
            routing = self.router(tokens.flatten(0, 1)).view(b, s + 1, -1)
            with torch.no_grad():
                embeds = self.subject_encoder(tokens.flatten(0, 1)).unflatten(0, (b, s + 1))             # B x R x m x D
            keep = torch.ones(b, dtype=torch.bool, device=tokens.device) if keep is None else keep
            embeds = torch.where(keep[:, None, None, None], embeds, embeds[:, -1:].expand_as(embeds))
            valid = torch.cat([subject_valid > 0.5, torch.ones(b, 1, dtype=torch.bool, device=tokens.device)], dim=1)
            self.bank.reset(tuple(noisy_latents.shape[-2:]), routing, embeds, valid, keep, gumbel_seed,
                            hard=gumbel_seed is not None)
            if self.reference_unet is not None and subject_latents is not None:
                latents = subject_latents.flatten(0, 1)
                zero = torch.zeros(latents.shape[0], 1, text_states.shape[-1], device=latents.device, dtype=latents.dtype)
                with torch.no_grad():
                    self.reference_unet(latents, torch.zeros(latents.shape[0], device=latents.device), zero,
                                        added_cond_kwargs={k: torch.zeros_like(v[:1]).expand(latents.shape[0], *v.shape[1:])
                                                           for k, v in added_cond.items()}, return_dict=False)
            return self.unet(noisy_latents, timesteps, text_states, added_cond_kwargs=added_cond, return_dict=False)[0]

        def maps(self, coarse: bool = False) -> list:
            """The refined (or coarse) soft maps of this forward's cross-attention layers, in forward
            order: B x (S+1) x hw each."""
            return [(self.bank.coarse if coarse else self.bank.maps)[n] for n in self.cross_names]

    made = SimpleNamespace(QFormer=QFormer, SubjectEncoder=SubjectEncoder, RouteLayer=RouteLayer, Router=Router,
                           RoutedUNet=RoutedUNet)
    for name, cls in vars(made).items():
        cls.__module__, cls.__qualname__ = __name__, name
    return made


def __getattr__(name: str):  # ``modules.Router`` etc. import torch only when asked for
    if name in ("QFormer", "SubjectEncoder", "RouteLayer", "Router", "RoutedUNet"):
        return getattr(classes(), name)
    raise AttributeError(name)
