"""Baselines (reference-implementation §2): own-code losses against float64 re-derivations of their published
formulas (plain loops, no ctxsim calls); PML-backed losses against PML configured with the
reference's arguments; build_loss, regulariser and graph-connected zero losses for every name."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ctxsim.losses import LOSSES, build_loss

torch.set_num_threads(1)


def _batch(seed, B=12, D=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.arange(classes).repeat_interleave(B // classes)


def _unit(x64):
    return x64 / x64.norm(dim=1, keepdim=True)


def _close_grads(g32, g64, rel=1e-5):
    scale = max(1.0, float(g64.abs().max()))
    assert float(g64.abs().max()) > 1e-4
    assert torch.allclose(g32.double(), g64, atol=rel * scale, rtol=1e-5)


# ----------------------------------------------------------------------------- float64 references
def ref_contrastive(x64, y, pm, nm):
    """Mean hinge over active positive pairs + mean over active negative pairs (diagonal included)."""
    f = _unit(x64)
    B = len(y)
    pos, npos, neg, nneg = 0.0, 0, 0.0, 0
    for i in range(B):
        for j in range(B):
            s = f[i] @ f[j]
            if y[i] == y[j] and pm - s.item() > 0:
                pos, npos = pos + (pm - s), npos + 1
            elif y[i] != y[j] and s.item() - nm > 0:
                neg, nneg = neg + (s - nm), nneg + 1
    return (pos / npos if npos else 0.0) + (neg / nneg if nneg else 0.0)


def ref_proxy_anchor(x64, P64, y, mrg, alpha):
    """Proxy-Anchor (Kim et al., CVPR 2020, eq. 4) with the reference's division by #proxies."""
    xn = x64 / torch.sqrt((x64 ** 2).sum(1, keepdim=True) + 1e-12)
    pn = P64 / torch.sqrt((P64 ** 2).sum(1, keepdim=True) + 1e-12)
    C = P64.shape[0]
    pos, neg, valid = 0.0, 0.0, 0
    for c in range(C):
        sp, sn, has = 0.0, 0.0, False
        for i in range(len(y)):
            cos = xn[i] @ pn[c]
            if y[i] == c:
                sp, has = sp + torch.exp(-alpha * (cos - mrg)), True
            else:
                sn = sn + torch.exp(alpha * (cos + mrg))
        if has:
            pos, valid = pos + torch.log(1 + sp), valid + 1
        neg = neg + torch.log(1 + sn)
    return pos / valid + neg / C


def _sig(d, tau):
    e = -d / tau
    if abs(e.item()) > 50:  # clamp(-50, 50): constant there
        return torch.tensor(1.0 / (1.0 + math.exp(max(-50.0, min(50.0, e.item())))), dtype=d.dtype)
    return 1.0 / (1.0 + torch.exp(e))


def ref_ap_loss(x64, y, kind, tau=0.01, rho=100.0, delta=0.05, offset=1.44, start=0.5, roadmap=False):
    """1 - mean AP, query counted as a positive; SupAP rank steps (ROADMAP, Ramzi et al. 2021) or
    SmoothAP sigmoids (Brown et al. 2020), reference-implementation §2.4."""
    f = _unit(x64)
    S = f @ f.T
    B = len(y)
    aps = []
    for i in range(B):
        ap = 0.0
        npos = sum(1 for j in range(B) if y[j] == y[i])
        for j in range(B):
            if y[j] != y[i]:
                continue
            r_all, r_pos = 1.0, 1.0
            for k in range(B):
                if k == j:
                    continue
                d = S[i, k] - S[i, j]
                if kind == "smoothap":
                    r = _sig(d, tau)
                elif y[k] == y[i]:
                    r = 1.0 if d.item() >= 0 else 0.0
                elif d.item() <= 0:
                    r = _sig(d, tau)
                elif d.item() <= delta:
                    r = start + _sig(d, tau)
                else:
                    r = rho * (d - delta) + offset if roadmap else rho * d + offset
                r_all = r_all + r
                if y[k] == y[j]:
                    r_pos = r_pos + r
            ap = ap + r_pos / r_all
        aps.append(ap / npos)
    return 1.0 - sum(aps) / B


# ----------------------------------------------------------------------------- own-code baselines
@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_matches_float64_formula(seed):
    x, y = _batch(seed)
    for pm, nm in ((0.9, 0.6), (0.5, 0.1)):
        xr = x.clone().requires_grad_(True)
        loss = build_loss("contrastive", pos_margin=pm, neg_margin=nm)(xr, y)
        loss.backward()
        x64 = x.double().requires_grad_(True)
        ref = ref_contrastive(x64, y.tolist(), pm, nm)
        ref.backward()
        assert loss.item() == pytest.approx(ref.item(), abs=1e-6)
        _close_grads(xr.grad, x64.grad)


def test_contrastive_defaults_and_seed_spec_value():
    x = torch.tensor([[1, .1, 0], [.9, .2, .1], [.8, -.1, .3], [.2, .9, .1], [.1, 1, .2], [0, .8, -.3],
                      [.7, .6, .2], [-.2, .1, 1]])
    loss = build_loss("contrastive")
    assert (loss.pos_margin, loss.neg_margin) == (0.9, 0.6)
    assert loss(x, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])).item() == pytest.approx(0.4678686, abs=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_proxy_anchor_matches_float64_formula(per_image):
    x, y = _batch(3, B=10, D=6, classes=5)
    kw = dict(num_classes=7, embedding_size=6)
    if per_image:
        kw.update(proxies_per_image=True, num_train_images=40)
    torch.manual_seed(0)
    loss_fn = build_loss("proxy_anchor", **kw)
    assert loss_fn.has_proxies and loss_fn.mrg == 0.1 and loss_fn.alpha == 32
    P = loss_fn.proxies
    assert P.shape == ((40 if per_image else 7), 6)
    assert loss_fn.proxy_parameters() == [P]
    xr = x.clone().requires_grad_(True)
    loss = loss_fn(xr, y)
    loss.backward()
    x64 = x.double().requires_grad_(True)
    P64 = P.detach().double().requires_grad_(True)
    ref = ref_proxy_anchor(x64, P64, y.tolist(), 0.1, 32.0)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    _close_grads(xr.grad, x64.grad)
    _close_grads(P.grad, P64.grad)


def test_proxy_anchor_per_image_divides_negative_term_by_image_count():
    x, y = _batch(4, B=8, D=6, classes=4)
    torch.manual_seed(1)
    a = build_loss("proxy_anchor", num_classes=4, embedding_size=6)
    torch.manual_seed(1)
    b = build_loss("proxy_anchor", num_classes=4, embedding_size=6, proxies_per_image=True, num_train_images=40)
    with torch.no_grad():
        b.proxies[:4] = a.proxies
    a(x, y), b(x, y)
    # the 36 extra proxies add negative mass too; the sum is divided by 40 instead of 4
    assert b.last_terms["pos"] == pytest.approx(a.last_terms["pos"], rel=1e-6)
    assert b.last_terms["neg"] != pytest.approx(a.last_terms["neg"], rel=1e-3)
    with pytest.raises(ValueError, match="num_train_images"):
        build_loss("proxy_anchor", num_classes=4, proxies_per_image=True)


def test_proxy_labels_checked_and_mapped():
    x, _ = _batch(0, B=6, D=4)
    loss = build_loss("proxy_anchor", num_classes=3, embedding_size=4)
    with pytest.raises(ValueError, match="labels"):
        loss(x, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError):
        build_loss("proxy_anchor", embedding_size=4)  # num_classes missing
    with pytest.raises(ValueError, match="embedding size"):
        loss(torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]))
    mapped = build_loss("proxy_nca", num_classes=3, embedding_size=4, class_ids=[101, 105, 230])
    torch.manual_seed(0)
    plain = build_loss("proxy_nca", num_classes=3, embedding_size=4)
    plain.load_state_dict(mapped.state_dict())
    a = mapped(x, torch.tensor([101, 105, 230, 230, 101, 105]))
    b = plain(x, torch.tensor([0, 1, 2, 2, 0, 1]))
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    with pytest.raises(ValueError, match="class_ids"):
        mapped(x, torch.tensor([101, 105, 231, 230, 101, 105]))


@pytest.mark.parametrize("roadmap_linear", [False, True])
def test_supap_and_roadmap_match_float64_formula(roadmap_linear):
    x, y = _batch(6, B=10, D=3, classes=2)
    f = F.normalize(x.double(), dim=1)
    S = f @ f.T
    d = (S.unsqueeze(1) - S.unsqueeze(2)).flatten()
    d = d[d.abs() > 1e-12]
    assert (d.abs().min() > 1e-5) and ((d - 0.05).abs().min() > 1e-5)  # no branch edge in fp32 noise
    assert ((d > 0) & (d <= 0.05)).any() and (d > 0.05).any() and (d < 0).any()  # every branch used
    xr = x.clone().requires_grad_(True)
    roadmap = build_loss("roadmap", roadmap_linear=roadmap_linear)
    loss = roadmap(xr, y)
    loss.backward()
    x64 = x.double().requires_grad_(True)
    ap = ref_ap_loss(x64, y.tolist(), "supap", roadmap=roadmap_linear)
    con = ref_contrastive(x64, y.tolist(), 0.9, 0.6)
    ref = 0.5 * con + 0.5 * ap
    ref.backward()
    assert roadmap.last_terms["ap"] == pytest.approx(ap.item(), abs=1e-5)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    _close_grads(xr.grad, x64.grad)


def test_supap_reference_form_differs_from_roadmap_form():
    x, y = _batch(6, B=10, D=3, classes=2)
    a = build_loss("roadmap")(x, y).item()
    b = build_loss("roadmap", roadmap_linear=True)(x, y).item()
    assert a != pytest.approx(b, abs=1e-4)


def test_smoothap_matches_float64_formula():
    x, y = _batch(8, B=10, D=3, classes=2)
    f = F.normalize(x.double(), dim=1)
    S = f @ f.T
    d = (S.unsqueeze(1) - S.unsqueeze(2)).abs().flatten()
    assert ((d - 0.5).abs().min() > 1e-5) and (d > 0.5).any()  # the ±50 clamp region is reached (its effect is < 1e-20)
    xr = x.clone().requires_grad_(True)
    loss_fn = build_loss("smoothap")
    assert loss_fn.tau == 0.01 and loss_fn.lam == 0.0
    loss = loss_fn(xr, y)
    loss.backward()
    x64 = x.double().requires_grad_(True)
    ref = ref_ap_loss(x64, y.tolist(), "smoothap")
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    _close_grads(xr.grad, x64.grad)


# ----------------------------------------------------------------------------- PML-backed baselines
def test_pml_baselines_use_reference_arguments():
    from pytorch_metric_learning import losses, miners

    t = build_loss("triplet")
    assert isinstance(t.miner, miners.DistanceWeightedMiner) and isinstance(t.loss_func, losses.TripletMarginLoss)
    assert (t.miner.cutoff, t.miner.nonzero_loss_cutoff, t.loss_func.margin) == (0.5, 1.4, 0.05)
    ms = build_loss("multisimilarity")
    assert ms.miner is None and (ms.loss_func.alpha, ms.loss_func.beta, ms.loss_func.base) == (2, 50, 0.5)
    msm = build_loss("ms_miner")
    assert isinstance(msm.miner, miners.MultiSimilarityMiner) and msm.miner.epsilon == 0.1
    assert (msm.loss_func.alpha, msm.loss_func.beta, msm.loss_func.base) == (2, 50, 0.5)
    assert build_loss("proxy_nca", num_classes=5, convention="224").loss_func.softmax_scale == 9
    assert build_loss("proxy_nca", num_classes=5, convention="256").loss_func.softmax_scale == 10
    assert build_loss("proxy_nca", num_classes=5, softmax_scale=3).loss_func.softmax_scale == 3
    assert build_loss("fastap").loss_func.num_bins == 10
    assert build_loss("ntxent").loss_func.temperature == 0.07
    assert build_loss("normsoftmax", num_classes=5).loss_func.temperature == 0.05


@pytest.mark.parametrize("name", ["triplet", "multisimilarity", "ms_miner", "fastap", "ntxent"])
def test_pml_baselines_equal_direct_pml_calls(name):
    from pytorch_metric_learning import losses, miners

    x, y = _batch(2, B=16, D=8, classes=4)
    f = F.normalize(x, dim=1)
    direct = {
        "triplet": (losses.TripletMarginLoss(margin=0.05), miners.DistanceWeightedMiner()),
        "multisimilarity": (losses.MultiSimilarityLoss(), None),
        "ms_miner": (losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()),
        "fastap": (losses.FastAPLoss(), None),
        "ntxent": (losses.NTXentLoss(), None),
    }[name]
    torch.manual_seed(0)
    ours = build_loss(name)(x, y)
    torch.manual_seed(0)
    func, miner = direct
    ref = func(f, y, miner(f, y)) if miner is not None else func(f, y)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    assert ours.item() > 0


@pytest.mark.parametrize("name", ["proxy_nca", "normsoftmax"])
def test_pml_proxy_baselines_equal_direct_pml_calls(name):
    from pytorch_metric_learning import losses

    x, y = _batch(2, B=16, D=8, classes=4)
    ours = build_loss(name, num_classes=4, embedding_size=8)
    ref = (losses.ProxyNCALoss(4, 8, softmax_scale=10) if name == "proxy_nca"
           else losses.NormalizedSoftmaxLoss(4, 8, temperature=0.05))
    ref.load_state_dict(ours.loss_func.state_dict())
    assert ours.has_proxies and len(ours.proxy_parameters()) == 1
    assert ours.proxy_parameters()[0].shape in ((4, 8), (8, 4))
    assert ours(x, y).item() == pytest.approx(ref(F.normalize(x, dim=1), y).item(), abs=1e-6)


# ----------------------------------------------------------------------------- regulariser, build_loss
def test_similarity_regulariser_added_to_a_baseline():
    x, y = _batch(1)
    base = build_loss("contrastive")(x, y).item()
    f = F.normalize(x.double(), dim=1)
    reg = ((f @ f.T).mean() - 0.3).item() ** 2
    add = build_loss("contrastive", reg_gamma=0.1, reg_sim=0.3)
    assert add(x, y).item() == pytest.approx(base + 0.1 * reg, abs=1e-6)
    assert add.last_terms["reg"] == pytest.approx(reg, abs=1e-6) and "con" in add.last_terms
    convex = build_loss("contrastive", reg_gamma=0.1, reg_sim=0.3, reg_form="convex")
    assert convex(x, y).item() == pytest.approx(0.9 * base + 0.1 * reg, abs=1e-6)
    assert build_loss("contrastive", reg_gamma=0.1, convention="256").reg_sim == 0.25
    assert build_loss("contrastive", reg_gamma=0.1, convention="224").reg_sim == 0.3
    pa = build_loss("proxy_anchor", num_classes=3, embedding_size=5, reg_gamma=0.1)
    assert pa.has_proxies and len(pa.proxy_parameters()) == 1
    with pytest.raises(ValueError, match="reg_gamma"):
        build_loss("triplet", reg_sim=0.3)


def test_build_loss_names_aliases_and_errors():
    assert set(LOSSES) == {"hybrid", "contrastive", "triplet", "multisimilarity", "ms_miner", "proxy_anchor",
                           "proxy_nca", "roadmap", "smoothap", "fastap", "ntxent", "normsoftmax"}
    for name in LOSSES:
        loss = build_loss(name, num_classes=4, embedding_size=8)
        assert loss.loss_name == name and loss.convention in ("256", "224")
        assert loss.has_proxies == (name in ("proxy_anchor", "proxy_nca", "normsoftmax"))
    assert build_loss("MS+miner").loss_name == "ms_miner"
    assert build_loss("Proxy_Anchor", num_classes=2).loss_name == "proxy_anchor"
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("arcface")
    with pytest.raises(ValueError, match="no option"):
        build_loss("contrastive", lam=0.3)
    with pytest.raises(ValueError, match="no option"):
        build_loss("multisimilarity", miner=True)
    with pytest.raises(ValueError):
        build_loss("hybrid", gamma=0.1, reg_gamma=0.2)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("case", ["all_distinct_orthogonal", "all_same", "satisfied"])
def test_every_loss_returns_a_graph_connected_scalar(name, case):
    if case == "all_distinct_orthogonal":
        x, y = torch.eye(6, 8), torch.arange(6)
    elif case == "all_same":
        x, y = torch.eye(6, 8), torch.zeros(6, dtype=torch.long)
    else:  # tight positive clusters far apart: no contrastive pair active
        x = torch.tensor([[1.0, 0.01, 0, 0]] * 3 + [[0, 0, 1.0, 0.01]] * 3) + torch.eye(6, 4) * 1e-3
        y = torch.tensor([0, 0, 0, 1, 1, 1])
    x = x.clone().requires_grad_(True)
    loss_fn = build_loss(name, num_classes=6, embedding_size=x.shape[1], reg_gamma=None)
    loss = loss_fn(x, y)
    assert loss.dim() == 0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert loss_fn.last_terms and all(math.isfinite(v) for v in loss_fn.last_terms.values())
    if name == "contrastive" and case != "all_same":
        assert loss.item() == 0.0


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_rejects_bad_shapes(name):
    loss = build_loss(name, num_classes=4, embedding_size=8)
    with pytest.raises(ValueError):
        loss(torch.randn(8, 8), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError):
        loss(torch.randn(8), torch.zeros(8, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", [n for n in LOSSES if n != "triplet"])  # triplet's miner samples
def test_losses_on_cuda_equal_cpu(name):
    x, y = _batch(2, B=16, D=8, classes=4)
    torch.manual_seed(0)
    cpu = build_loss(name, num_classes=4, embedding_size=8)
    gpu = build_loss(name, num_classes=4, embedding_size=8)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    xg = x.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        out = gpu(xg.half(), y.cuda())
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(xg.grad).all()
    assert out.item() == pytest.approx(cpu(x.half().float(), y).item(), abs=1e-4)
