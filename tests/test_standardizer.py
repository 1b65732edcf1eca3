"""The standardizer model (train/models/standardizer) with tiny models built from configs: the
FBDM and RPIM switches remove exactly their parameters; gradients reach both UNets, the FBDM
tokens, RPIM and the pose guider with fused attention and gradient checkpointing; checkpointing
changes nothing numerically; the model overfits a fixed batch of demo pairs; a saved checkpoint
loads back bit for bit, and a folder that is not one is refused naming what it is."""
import pytest
import torch

from tests.tools.stage1_data import SIZE, make_stage1_data
from train.models.standardizer import CheckpointError, load_base, load_checkpoint, read_identity, save_checkpoint
from train.models.standardizer.layout import check_resolution

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_stage1_data(tmp_path_factory.mktemp("standardizer"))


def tiny(data, fbdm=True, rpim=True):
    torch.manual_seed(0)
    return load_base(str(data / "base"), str(data / "base" / "image_encoder"), fbdm, rpim)


@pytest.fixture(scope="module")
def batch(data):
    """A fixed batch of 4 decoded demo pairs, as model inputs (latents encoded by the tiny VAE)."""
    from train.data import ShardLoader, ShardSet, ShardStream, decoder_for, to_model
    from train.models.standardizer import clip_image_embeds

    stream = ShardStream(ShardSet.load(data / "composited", "composited_pair"),
                         decoder_for("composited_pair", SIZE, normalize=False), 4, seed=1)
    b = to_model(next(iter(ShardLoader(stream))))
    _, frozen = tiny(data)
    with torch.no_grad():
        scaling = frozen.vae.config.scaling_factor
        latents = frozen.vae.encode(b["std"]).latent_dist.mode() * scaling
        reference = frozen.vae.encode(b["image"]).latent_dist.mode() * scaling
        embeds = clip_image_embeds(frozen.image_encoder, b["image"])
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (4,), generator=generator)
    noisy = frozen.scheduler.add_noise(latents, noise, timesteps)
    return {"args": (noisy, timesteps, reference, embeds, b["std_pose"], b["bg_mask"], b["pose"]), "noise": noise}


def test_switches_remove_exactly_their_parameters(data):
    names = {switches: {n for n, _ in tiny(data, *switches)[0].named_parameters()}
             for switches in ((True, True), (False, True), (True, False), (False, False))}
    full = names[True, True]
    fbdm, rpim = full - names[False, True], full - names[True, False]
    assert fbdm and all(n.startswith("reference_adapter.fbdm_tokens.") for n in fbdm)
    assert rpim and all(n.startswith(("reference_adapter.rpim_encoder.", "reference_adapter.rpim_projections."))
                        for n in rpim)
    assert names[False, True] == full - fbdm and names[True, False] == full - rpim
    assert names[False, False] == full - fbdm - rpim
    assert len(fbdm) == 4  # one token pair per self-attention of the tiny ReferenceNet (2 down + 2 up)


def test_gradients_reach_every_trainable_part_with_checkpointing(data, batch):
    model, frozen = tiny(data)
    unused = model.freeze_unused(frozen.image_encoder.config.projection_dim)
    assert unused and all(n.startswith("reference_unet.up_blocks.1.attentions.1.") or "_out" in n for n in unused)
    plain = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, _ = tiny(data)
        model.freeze_unused(32)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        for _ in range(2):  # the second step: zero-initialised outputs (pose guider, RPIM) have moved
            optimizer.zero_grad()
            loss = (model(*batch["args"]) - batch["noise"]).square().mean()
            loss.backward()
            optimizer.step()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        # single-token cross-attention: softmax over one key is constant, so attn2's q/k get exactly zero
        silent = {n for n, g in grads.items() if float(g.abs().sum()) == 0}
        assert all(".attn2.to_q." in n or ".attn2.to_k." in n or ".norm2." in n for n in silent), silent
        for part in ("reference_unet.", "denoising_unet.", "pose_guider.", "reference_adapter.fbdm_tokens.",
                     "reference_adapter.rpim_encoder.", "reference_adapter.rpim_projections."):
            assert any(n.startswith(part) and n not in silent for n in grads), part
        if checkpointing:
            for name, grad in grads.items():
                torch.testing.assert_close(grad, plain[name], rtol=1e-4, atol=1e-6)
        plain = grads


def test_overfits_a_fixed_batch(data, batch):
    model, _ = tiny(data)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = (model(*batch["args"]) - batch["noise"]).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] / 10, losses[::10]


def test_checkpoint_round_trip_and_refusals(data, batch, tmp_path):
    model, frozen = tiny(data, fbdm=False)
    identity = save_checkpoint(tmp_path / "ckpt", model, frozen, SIZE, standard_pose=[[1.0, 2.0, 1.0]] * 18)
    assert read_identity(tmp_path / "ckpt") == identity and identity["fbdm"] is False and identity["rpim"] is True
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(*batch["args"]), loaded(*batch["args"]))
    with pytest.raises(CheckpointError, match="not a standardizer checkpoint.*diffusers pipeline or base model"):
        read_identity(data / "base")
    with pytest.raises(CheckpointError, match="no such folder"):
        read_identity(tmp_path / "nowhere")
    unet = {"down_block_types": ["CrossAttnDownBlock2D"] * 4}  # SD-1.5's depth
    with pytest.raises(ValueError, match=r"multiple of 64 .* resolution=\[512, 768\]"):
        check_resolution((520, 768), unet)
    check_resolution((512, 768), unet)
