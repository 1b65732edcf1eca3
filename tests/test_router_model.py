"""The router model (train/models/router) on the tiny SDXL-shaped base: samples of 2, 3 and 4
subjects batch together (stacked to 4 slots; a padded slot's logits are -inf, so its map is 0 in
every layer, its 0/1 map never picks it, a change of its image changes nothing, and the loss
leaves it out); the 0/1 maps are one-hot with the Gumbel straight-through gradient; the routing
loss falls on a fixed batch; layers run in the UNet's forward order."""
import pytest
import torch

from train.models.router import clip_tokens, encode_text, load_base, routing_loss
from train.models.router.model import time_ids
from train.models.router.modules import cross_attention_names

pytestmark = pytest.mark.slow
H, W, SUBJECT = 64, 48, (48, 32)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from train.models.tiny import build_tiny_sdxl_base
    return build_tiny_sdxl_base(tmp_path_factory.mktemp("sdxl") / "base")


def build(base, **options):
    torch.manual_seed(0)
    return load_base(str(base), str(base / "image_encoder"), router_width=32, subject_width=32, subject_tokens=4,
                     gamma=0.5, **options)


def batch(frozen, counts=(2, 3, 4), seed=0):
    """Scenes with ``counts`` subjects each, stacked to 4 slots; subject i owns a vertical stripe."""
    g = torch.Generator().manual_seed(seed)
    n = len(counts)
    valid = torch.tensor([[1.0] * c + [0.0] * (4 - c) for c in counts])
    masks = torch.zeros(n, 4, H, W)
    for b, c in enumerate(counts):
        for i in range(c):
            masks[b, i, 8:56, i * 12:i * 12 + 10] = 1
    image = torch.rand(n, 3, H, W, generator=g) * 2 - 1
    subjects = (torch.rand(n, 4, 3, *SUBJECT, generator=g) * 2 - 1) * valid[..., None, None, None]
    return {"image": image, "subjects": subjects, "masks": masks, "subject_valid": valid,
            "caption": ["two people", "three people", "four people"][:n]}


def inputs(frozen, b):
    with torch.no_grad():
        n = b["image"].shape[0]
        latents = frozen.vae.encode(b["image"]).latent_dist.mode() * frozen.vae.config.scaling_factor
        text, pooled = encode_text(frozen, b["caption"], "cpu")
        tokens = clip_tokens(frozen.image_encoder, b["subjects"].flatten(0, 1)).unflatten(0, (n, 4))
        background = clip_tokens(frozen.image_encoder, -torch.ones(1, 3, *SUBJECT))
        subject_latents = (frozen.vae.encode(b["subjects"].flatten(0, 1)).latent_dist.mode()).unflatten(0, (n, 4))
    return latents, {"text_states": text, "added_cond": {"text_embeds": pooled, "time_ids": time_ids((H, W), n, "cpu")},
                     "subject_tokens": tokens, "background_tokens": background, "subject_valid": b["subject_valid"],
                     "subject_latents": subject_latents}


def test_two_three_and_four_subjects_batch_together_with_padding_masked(base):
    model, frozen = build(base)
    b = batch(frozen)
    latents, conditions = inputs(frozen, b)
    t = torch.tensor([300, 300, 300])
    with torch.no_grad():
        out = model(latents, t, **conditions, gumbel_seed=1)
        maps = {n: m.clone() for n, m in model.bank.maps.items()}
        binary = {n: m.clone() for n, m in model.bank.binary.items()}
    assert len(maps) == 7  # every cross-attention layer of the tiny SDXL UNet
    for name, soft in maps.items():
        assert soft.shape[:2] == (3, 5) and torch.allclose(soft.sum(1), torch.ones(1))  # a distribution over routes
        assert soft[0, 2:4].abs().max() == 0 and soft[1, 3].abs().max() == 0             # padded slots: 0
        assert set(binary[name].unique().tolist()) <= {0.0, 1.0} and torch.equal(binary[name].sum(1), torch.ones_like(binary[name][:, 0]))
        assert binary[name][0, 2:4].max() == 0 and binary[name][1, 3].max() == 0
    # a padded slot's image changes nothing: not the noise prediction, not a map
    conditions["subject_tokens"] = conditions["subject_tokens"].clone()
    conditions["subject_tokens"][0, 2:] += 5.0
    conditions["subject_latents"] = conditions["subject_latents"].clone()
    conditions["subject_latents"][0, 2:] += 5.0
    with torch.no_grad():
        again = model(latents, t, **conditions, gumbel_seed=1)
    assert torch.allclose(out[0], again[0], atol=1e-5)
    assert all(torch.allclose(maps[n][0], model.bank.maps[n][0], atol=1e-6) for n in maps)
    # the loss leaves padded slots out: garbage in their masks changes nothing
    noisy = b["masks"].clone()
    noisy[0, 2:] = 1
    loss = routing_loss(list(maps.values()), b["masks"], b["subject_valid"], tuple(latents.shape[-2:]))
    assert loss == routing_loss(list(maps.values()), noisy, b["subject_valid"], tuple(latents.shape[-2:]))


def test_gumbel_maps_pass_the_diffusion_gradient_to_the_router(base):
    model, frozen = build(base, reference_net=False)
    b = batch(frozen, counts=(2,))
    latents, conditions = inputs(frozen, b)
    conditions.pop("subject_latents")
    out = model(latents, torch.tensor([500]), **conditions, gumbel_seed=3)
    out.square().mean().backward()  # the diffusion side only: no routing loss
    grads = [p.grad for p in model.router.route_layers.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.unet.parameters()) and all(p.grad is None for p in model.subject_encoder.parameters())


def test_routing_loss_falls_on_a_fixed_batch(base):
    model, frozen = build(base)
    b = batch(frozen)
    latents, conditions = inputs(frozen, b)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(25):
        model(latents, torch.tensor([200, 200, 200]), **conditions, gumbel_seed=step)
        loss = routing_loss(model.maps(), b["masks"], b["subject_valid"], tuple(latents.shape[-2:]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_layers_run_in_forward_order(base):
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    seen = []
    for name in cross_attention_names(unet):
        unet.get_submodule(name.removesuffix(".processor")).register_forward_hook(lambda m, i, o, n=name: seen.append(n))
    unet(torch.randn(1, 4, 8, 6), torch.tensor([1]), torch.randn(1, 77, 64),
         added_cond_kwargs={"text_embeds": torch.randn(1, 32), "time_ids": time_ids((64, 48), 1, "cpu")})
    assert seen == cross_attention_names(unet)
