"""Corpora for the curation tests, each with one known defect per item: photos made from the
real photographs scikit-image ships, and procedural characters with one defect injected each.
``expected`` maps each file to the reason category the curation must give (None: kept)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg(image: np.ndarray | Image.Image, quality: int = 92, **save) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format="JPEG",
                                                                              quality=quality, **save)
    return buffer.getvalue()


def astronaut() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut()


def photo_corpus(folder: Path) -> dict[str, str | None]:
    """Altered copies of skimage's astronaut (the one person photo it ships) and people-free
    photos (coffee, chelsea); returns file name -> expected reason category."""
    import cv2
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    person = astronaut()
    upright = Image.fromarray(person)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (folder / name).write_bytes(data)
        expected[name] = reason

    put("clean.jpg", jpeg(person), None)
    # EXIF orientation 6 (rotate 90 degrees clockwise to view): stored rotated back, so it is
    # only upright (and a person is only found) if the orientation is applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif-rotated.jpg", jpeg(upright.rotate(90, expand=True), exif=exif.tobytes()), None)
    cmyk = io.BytesIO()
    upright.convert("CMYK").save(cmyk, format="JPEG", quality=92)
    put("cmyk.jpg", cmyk.getvalue(), None)
    sixteen = io.BytesIO()
    Image.fromarray(np.asarray(upright.convert("L")).astype(np.uint16) * 257).save(sixteen, format="PNG")
    put("grey16.png", sixteen.getvalue(), None)
    palette = io.BytesIO()
    upright.convert("P", palette=Image.ADAPTIVE).save(palette, format="PNG")
    put("palette.png", palette.getvalue(), None)
    put("blurred.jpg", jpeg(cv2.GaussianBlur(person, (0, 0), 6)), "blur")
    put("dark.jpg", jpeg((person * 0.07).astype(np.uint8)), "exposure")
    put("no-person.jpg", jpeg(np.asarray(upright.crop((300, 0, 512, 512)).resize((424, 512)))), "person")
    put("two-people.jpg", jpeg(np.concatenate([person, person], axis=1)), "people")
    put("tiny.jpg", jpeg(np.asarray(upright.resize((200, 200)))), "size")
    put("coffee.jpg", jpeg(np.asarray(Image.fromarray(skimage.data.coffee()).resize((600, 400)))), "person")
    put("zero-bytes.jpg", b"", "decode")
    put("not-an-image.jpg", b"<html>404</html>", "decode")
    return expected


def photo_shards(folder: Path, clean: bytes, copy: bytes) -> list[Path]:
    """Two WebDataset shards of one job: the clean photo in the first, a re-encoded and resized
    copy of it in the second (a duplicate across shards)."""
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, key, data in (("a.tar", "original", clean), ("b.tar", "reencoded", copy)):
        path = folder / name
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(f"{key}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def reencoded_copy(image: np.ndarray) -> bytes:
    """The same photo at another size and JPEG quality."""
    height, width = image.shape[:2]
    return jpeg(Image.fromarray(image).resize((width * 3 // 4, height * 3 // 4), Image.LANCZOS), quality=70)


# ---- characters -----------------------------------------------------------------------------------

def _edit(path: Path, change) -> None:
    """Rewrite a .glb with ``change(builder)`` applied to its JSON (and new accessors)."""
    from render.gltf import Glb, GlbBuilder
    builder = GlbBuilder.from_glb(Glb.load(path))
    change(builder)
    path.write_bytes(builder.to_bytes())


def _positions(builder) -> tuple[int, np.ndarray]:
    from render.gltf import Glb
    glb = Glb(builder.to_bytes())
    index = builder.gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"]
    return index, glb.read(index).astype(np.float32)


def _set_positions(builder, positions: np.ndarray) -> None:
    builder.gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"] = builder.accessor(positions, "VEC3")


def _set_texture(builder, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    builder.gltf["textures"][0]["source"] = builder.image(buffer.getvalue())


def scaled_reexport(params, path: Path, scheme: str, scale: float) -> Path:
    """A character written under another rig's bone names, with everything scaled."""
    from render.procedural.writer import write_character_glb
    write_character_glb(params, path, scheme=scheme)

    def scale_all(builder):
        _, positions = _positions(builder)
        _set_positions(builder, positions * scale)
        for node in builder.gltf["nodes"]:
            if "translation" in node:
                node["translation"] = [t * scale for t in node["translation"]]
        from render.gltf import Glb
        skin = builder.gltf["skins"][0]
        inverse = Glb(builder.to_bytes()).read(skin["inverseBindMatrices"]).astype(np.float32)
        inverse[:, :3, 3] *= scale
        skin["inverseBindMatrices"] = builder.accessor(inverse, "MAT4", target=None)
    _edit(path, scale_all)
    return path


def character_corpus(folder: Path, seed: int = 7) -> dict[str, str | None]:
    """Procedural characters, each with one defect (or none), and a re-exported, scaled copy of
    the first; returns file name -> expected reason category."""
    from render.procedural.params import character_seed, sample_params
    from render.procedural.writer import write_character_glb

    folder.mkdir(parents=True, exist_ok=True)
    params = [sample_params(character_seed(seed, i)) for i in range(9)]
    expected: dict[str, str | None] = {}

    def make(name: str, index: int, reason: str | None, change=None, **kwargs) -> None:
        path = write_character_glb(params[index], folder / name, **kwargs)
        if change is not None:
            _edit(path, change)
        expected[name] = reason

    make("a-clean.glb", 0, None)
    make("b-clean-vroid.glb", 1, None, scheme="vroid")
    make("c-no-skin.glb", 2, "animatable", lambda b: (b.gltf.pop("skins"), b.gltf["nodes"][0].pop("skin")))

    def rename(builder):
        for node in builder.gltf["nodes"][1:]:
            node["name"] = f"bone{id(node) % 997}-{node['name'][::-1]}x"
    make("d-unmapped-bones.glb", 3, "bonemap", rename)

    def zero_bone(builder):
        by_name = {n["name"]: n for n in builder.gltf["nodes"]}
        by_name["left_lower_arm"]["translation"] = [0.0, 0.0, 0.0]
    make("e-zero-length-bone.glb", 4, "skeleton", zero_bone)

    def nan_vertex(builder):
        _, positions = _positions(builder)
        positions[10] = np.nan
        _set_positions(builder, positions)
    make("f-nan-vertex.glb", 5, "mesh", nan_vertex)
    make("g-magenta-texture.glb", 6, "texture",
         lambda b: _set_texture(b, np.tile(np.array([255, 0, 255], np.uint8), (256, 256, 1))))
    make("h-tiny-texture.glb", 7, "texture",
         lambda b: _set_texture(b, np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)))
    (folder / "i-truncated.glb").write_bytes(write_character_glb(params[8], folder / "tmp.glb").read_bytes()[:4000])
    (folder / "tmp.glb").unlink()
    expected["i-truncated.glb"] = "load"
    (folder / "j-model.fbx").write_bytes(b"Kaydara FBX Binary  \x00")
    expected["j-model.fbx"] = "load"
    scaled_reexport(params[0], folder / "k-a-as-mixamo-scaled.glb", "mixamo", 1.37)
    expected["k-a-as-mixamo-scaled.glb"] = "duplicate"
    (folder / "expected.json").write_text(json.dumps(expected, indent=1))
    return expected
