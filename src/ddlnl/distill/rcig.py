"""``rcig``: repeated convex implicit gradients (Loo et al., ICML 2023), as the seed paper runs it.

docs/methods/rcig.md. Per outer iteration:

1. pick a model of the pool (base weights theta0 of RCIG's ConvNet with softplus(60));
2. **inner problem**: on the coreset (images plus their horizontal flips, learned labels)
   minimise the convex linearised-model loss L_in(delta) for ``inner_steps`` Adam steps from
   delta = 0 (or CG), with the kernel-ridge read-out on the base features
   (:mod:`ddlnl.distill.rcig_math` has the algebra);
3. **outer loss** on ``batch_real`` real images with their (noisy) labels: cross-entropy of the
   linearised model's ridge predictions times e^tau, minus the label-margin term;
4. **gradients**: the direct gradient (delta fixed) to images, labels and tau; g_t = dL_out/d delta;
   v ~ H^-1 g_t by ``hinv_steps`` of Adam on the quadratic (RCIG) or CG; the implicit gradient
   -d/d(X, Y) [v . grad_delta L_in], clipped per tensor to the direct gradient's norm, added;
5. AdaBelief steps (lr ``lr_images`` for images and labels, ``lr_temp`` for tau), EMA of the
   coreset (decay 0.99, bias-corrected): **the EMA is what is saved**;
6. the chosen pool model trains its base weights for randint(1, pool_max_steps) Adam steps
   (MSE to the coreset labels); after ``max_online_steps`` steps it is re-initialised.

Learning rates of the two Adam solves are tuned as RCIG does: from a small value, x``tune_factor``
while the 20-step curve is strictly decreasing, then x0.7; and every ``lr_monitor_interval``
iterations x0.9 if >= 29 % of the solves diverged, x1.05 if >= 70 % were monotone.

The distillation network is RCIG's own (``rcig_convnet``, ``width``/``depth``/``softplus_temp``
options), independent of the preset's evaluation model. The saved labels are regression
targets (``meta["label_semantics"] = "regression_targets"``, ``meta["label_temperature"]`` =
e^tau); ``meta["decode"] = {"kind": "flip_copies"}`` when flips are used, so every evaluation
trains on the set with its flipped copies, as RCIG's own evaluation does.

Paper table: with ``setting: auto`` the values of RCIG's per-setting config files (``depth_3``,
``cifar100_50``, ``depth_4_200``, ``depth_4_big``; docs/rcig.md) replace the options they cover,
chosen by dataset and IPC (:data:`PAPER_TABLE`, :func:`paper_setting`), as DATM's ``setting:
auto`` does; options the table does not cover (iterations, solvers, tuning, ...) keep the
preset's values. The applied values go into a new options object for the run
(:meth:`RCIG.resolved_options`), recorded in the set's ``meta["applied_options"]``; the
distiller's own options (and ``options_dict()``, the stage key) stay as configured.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

from ddlnl.distill import rcig_math as R
from ddlnl.distill.base import Capabilities, DistillContext, Distiller, register_distiller
from ddlnl.distill.loop import DistillLoop
from ddlnl.errors import ConfigError, check_choice
from ddlnl.models import create_model
from ddlnl.models.functional import flatten_params
from ddlnl.optim import AdaBelief
from ddlnl.synset import SyntheticSet
from ddlnl.train import centred_one_hot


# --------------------------------------------------------------------------- paper table

# RCIG's configs_final files, as ddlnl options. depth_3 is the CIFAR config; the others change what
# is listed. Their memory options (random subsets of the coreset and of the real batch to
# back-propagate through, precomputed features, forward chunks) and cifar100_50's normal_repeats 2
# are not ported: ddlnl back-propagates through the whole coreset and real batch, once.
# depth_4_big spells its pool-size key pool_model_6count, so the file sets no pool size; ddlnl
# uses the 30 written under that key.
_DEPTH_3 = dict(softplus_temp=60.0, pool_size=30, pool_lr=5e-5, pool_max_steps=16, max_online_steps=100, l2_rate=5e-4,
                inner_steps=20, hinv_steps=20, lr_images=0.003, learn_labels=True, use_flip=True)
#: (dataset, IPC) -> (RCIG config file, options); IPC None: every IPC of the dataset without its own row.
PAPER_TABLE: dict[tuple[str, int | None], tuple[str, dict]] = {
    ("cifar10", None): ("depth_3", _DEPTH_3),
    ("cifar100", None): ("depth_3", _DEPTH_3),
    ("cifar100", 50): ("cifar100_50", _DEPTH_3 | dict(use_flip=False)),
    ("tinyimagenet", 1): ("depth_4_200", _DEPTH_3 | dict(softplus_temp=0.0)),  # ReLU (softplus off)
    ("tinyimagenet", 10): ("depth_4_big", _DEPTH_3 | dict(softplus_temp=0.0, use_flip=False)),
}


def paper_setting(dataset: str, ipc: int) -> tuple[str, dict]:
    """(RCIG config file, options) for a dataset and IPC: its own row, else the dataset's any-IPC row."""
    row = PAPER_TABLE.get((dataset, ipc)) or PAPER_TABLE.get((dataset, None))
    if row is None:
        known = ", ".join(f"{d} IPC {'any' if i is None else i}" for d, i in PAPER_TABLE)
        raise ConfigError(f"RCIG's paper table has no row for {dataset} IPC {ipc}",
                          f"use one of: {known}; or set methods.rcig.setting=none and give the options yourself")
    name, values = row
    return name, dict(values)


@register_distiller
class RCIG(Distiller):
    name = "rcig"
    capabilities = Capabilities(soft_labels=True, native_eval=True)  # labels: learned regression targets

    @dataclass(frozen=True)
    class Options:
        setting: str = "none"  # auto: RCIG's config file for the run's dataset and IPC (PAPER_TABLE, module doc)
        iterations: int = 10000
        # RCIG's network for distillation (docs/methods/rcig.md §4.1); depth null = 3/4/5 for 32/64/128 px
        width: int = 128
        depth: int | None = None
        softplus_temp: float = 60.0
        # model pool (§4.5)
        pool_size: int = 30
        pool_lr: float = 5e-5
        pool_max_steps: int = 16  # each iteration trains randint(1, pool_max_steps) steps
        max_online_steps: int = 100
        # inner problem and inverse-Hessian product (§4.3, §4.4)
        l2_rate: float = 5e-4  # lambda = l2_rate * ipc * C
        inner_steps: int = 20
        hinv_steps: int = 20
        inner_solver: str = "adam"  # adam (RCIG) | cg
        hinv_solver: str = "adam"  # adam (RCIG) | cg
        inner_lr: float | None = None  # null: auto-tuned from tune_inner_lr
        hvp_lr: float | None = None  # null: auto-tuned from tune_hvp_lr (Adam only)
        tune_inner_lr: float = 1e-5
        tune_hvp_lr: float = 5e-5
        tune_factor: float = 1.2
        tune_max_trials: int = 60
        lr_monitor_interval: int = 50
        formulation: str = "jvp"  # jvp | linearize | vjp (rcig_math.Linearised)
        use_x64: bool = True  # float64 kernel-ridge solves
        clip_implicit: bool = True
        # outer problem and coreset optimiser
        batch_real: int = 1024
        lr_images: float = 0.003  # AdaBelief, images and labels (proto_learning_rate)
        lr_temp: float = 0.03  # AdaBelief, log-temperature
        learn_labels: bool = True
        use_flip: bool = True
        ema_decay: float = 0.99
        init: str = "real"  # real | noise
        log_every: int = 50

        def __post_init__(self):
            check_choice("rcig setting", self.setting, ("none", "auto"))
            check_choice("rcig inner_solver", self.inner_solver, R.SOLVERS)
            check_choice("rcig hinv_solver", self.hinv_solver, R.SOLVERS)
            check_choice("rcig formulation", self.formulation, R.FORMULATIONS)
            check_choice("rcig init", self.init, ("real", "noise"))
            ints = {"iterations": 0, "width": 1, "pool_size": 1, "pool_max_steps": 2, "max_online_steps": 1,
                    "inner_steps": 0, "hinv_steps": 0, "batch_real": 1, "lr_monitor_interval": 1, "log_every": 1,
                    "tune_max_trials": 1}
            for name, low in ints.items():
                v = getattr(self, name)
                if not isinstance(v, int) or isinstance(v, bool) or v < low:
                    raise ConfigError(f"rcig {name} must be an integer >= {low}, got {v!r}", f"set {name} to {low} or more")
            if self.depth is not None and (not isinstance(self.depth, int) or self.depth < 1):
                raise ConfigError(f"rcig depth must be a positive integer or null, got {self.depth!r}", "use depth: null (RCIG's rule)")
            positive = ("pool_lr", "l2_rate", "tune_inner_lr", "tune_hvp_lr", "lr_images", "lr_temp")
            for name in positive + ("inner_lr", "hvp_lr"):
                v = getattr(self, name)
                if v is None and name in ("inner_lr", "hvp_lr"):
                    continue
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v) or v <= 0:
                    raise ConfigError(f"rcig {name} must be a positive number, got {v!r}", "see docs/methods/rcig.md §4.3-4.5 for RCIG's values")
            if not isinstance(self.softplus_temp, (int, float)) or self.softplus_temp < 0:
                raise ConfigError(f"rcig softplus_temp must be >= 0, got {self.softplus_temp!r}", "use 60 (RCIG) or 0 (ReLU)")
            if not 1.0 < float(self.tune_factor) <= 10.0:
                raise ConfigError(f"rcig tune_factor must be in (1, 10], got {self.tune_factor!r}", "use 1.2 (RCIG)")
            if not 0.0 <= float(self.ema_decay) < 1.0:
                raise ConfigError(f"rcig ema_decay must be in [0, 1), got {self.ema_decay!r}", "use 0.99 (RCIG)")

    # ------------------------------------------------------------------------------ options
    # options_dict() is the options as configured (``setting: auto`` unresolved: a run's stage key is
    # the same before and after the paper row is applied); ``setting: none`` is left out of it, so
    # runs made before the option existed keep their keys
    KEY_ONLY_IF_SET = {"setting": "none"}

    def resolved_options(self, ctx: DistillContext, ipc: int) -> "RCIG.Options":
        """The options for this run: as configured, or under ``setting: auto`` a new object with the
        paper row for (dataset, IPC) applied; ``self.options`` is never changed."""
        o = self.options
        if o.setting != "auto":
            return o
        name, values = paper_setting(ctx.dataset, ipc)
        names = {f.name for f in fields(o)}
        ctx.log(f"[ddlnl] rcig paper setting for {ctx.dataset} IPC {ipc} (RCIG's {name}): {values}")
        return replace(o, **{k: v for k, v in values.items() if k in names})

    # ------------------------------------------------------------------------------ helpers
    # Each helper reads the run's options ``o`` (resolved_options); without ``o``, the configured ones.
    def _net(self, ctx: DistillContext, size: int, o=None):
        o = self.options if o is None else o
        return create_model("rcig_convnet", ctx.num_classes, image_size=size, in_channels=int(ctx.images.shape[1]),
                            width=o.width, depth=o.depth, softplus_temp=float(o.softplus_temp))

    def _fresh_params(self, ctx: DistillContext, size: int, count: int, o=None) -> torch.Tensor:
        """Base weights of pool model number ``count`` (a fixed seed per count: reproducible after resume)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed_for("rcig.pool_network", count))
            return flatten_params(self._net(ctx, size, o)).to(ctx.device)

    def init_set(self, ctx: DistillContext, ipc: int, g: torch.Generator, o=None) -> tuple[torch.Tensor, torch.Tensor]:
        images, classes = ctx.random_real(ipc, g)
        if (self.options if o is None else o).init == "noise":
            images = 0.3 * torch.randn(images.shape, generator=g)
        return images, centred_one_hot(classes, ctx.num_classes)

    # ------------------------------------------------------------------------------ the steps
    def solve_inner(self, net, theta0, xs, ys, lam, lr, o=None):
        """(problem, delta, history) for the coreset (xs, ys) at base weights theta0."""
        o = self.options if o is None else o
        lin = R.Linearised(net, theta0, xs, formulation=o.formulation, mask=self.mask)
        prob = R.InnerProblem(lin, ys, lam, o.use_x64)
        if o.inner_steps == 0:
            return prob, torch.zeros_like(theta0), []
        delta, hist = R.solve_quadratic(o.inner_solver, prob.hvp, prob.b, o.inner_steps, lr)
        return prob, delta, hist

    def outer_grads(self, net, theta0, prob, delta, x_syn, y_syn, log_temp, xt, yt, lam, o=None):
        """Direct gradients (images, labels, log_temp), g_t = dL_out/d delta, loss, accuracy."""
        o = self.options if o is None else o
        lin_t = R.Linearised(net, theta0, xt, formulation=o.formulation, mask=self.mask)
        o_t = lin_t.J(delta).requires_grad_(True)
        xs, ys = R.with_flips(x_syn, y_syn, o.use_flip)
        feats_s, (o_s,) = R.tangents_with_graph(net, theta0, xs, [delta], o.formulation)
        loss, acc = R.outer_loss(lin_t.feats, o_t, feats_s, o_s, ys, yt, log_temp, lam, use_x64=o.use_x64, y_margin=y_syn)
        gx, gy, gtau, g_ot, g_os = torch.autograd.grad(loss, [x_syn, y_syn, log_temp, o_t, o_s])
        g_t = lin_t.JT(g_ot) + prob.lin.JT(g_os)
        self._passes += lin_t.passes + 2 * xs.shape[0]
        return gx, gy, gtau, g_t, float(loss.detach()), acc

    def implicit_grads(self, net, theta0, delta, v, x_syn, y_syn, lam, o=None):
        """-d/d(images, labels) [v . grad_delta L_in]."""
        o = self.options if o is None else o
        xs, ys = R.with_flips(x_syn, y_syn, o.use_flip)
        feats_s, (j_v, j_d) = R.tangents_with_graph(net, theta0, xs, [v.detach(), delta.detach()], o.formulation)
        s = R.implicit_objective(feats_s, j_v, j_d, ys, v.detach(), delta.detach(), lam, o.use_x64)
        self._passes += 3 * xs.shape[0]
        ix, iy = torch.autograd.grad(-s, [x_syn, y_syn])
        return ix, iy

    def train_pool_model(self, net, theta, m, v, step: int, xs, ys, n_steps: int, lr: float) -> int:
        """``n_steps`` Adam steps on the base weights (in place), MSE to the coreset labels; returns the new step count."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        for _ in range(n_steps):
            t = theta.detach().requires_grad_(True)
            logits = R.net_forward(net, t, xs)[0]
            (g,) = torch.autograd.grad(0.5 * ((logits - ys) ** 2).mean(), t)
            step += 1
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            theta.sub_(lr * (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + eps))
            self._passes += 2 * xs.shape[0]
        return step

    def tune(self, ctx, net, theta0, x_syn, y_syn, log_temp, xt, yt, lam, o=None) -> tuple[float, float, dict]:
        """RCIG's start-up search: the largest lr (x tune_factor steps, then x0.7) whose solve is monotone."""
        o = self.options if o is None else o
        xs, ys = R.with_flips(x_syn.detach(), y_syn.detach(), o.use_flip)
        report = {"inner_trials": 0, "hvp_trials": 0}

        def search(start, verdict_at):
            lr, trials = start, 0
            while trials < o.tune_max_trials and verdict_at(lr) == 1:
                lr *= o.tune_factor
                trials += 1
            return lr * 0.7, trials + 1

        prob = R.InnerProblem(R.Linearised(net, theta0, xs, formulation=o.formulation, mask=self.mask), ys, lam, o.use_x64)
        inner_lr = o.inner_lr
        if inner_lr is None and o.inner_solver == "adam" and o.inner_steps > 1:
            inner_lr, report["inner_trials"] = search(
                o.tune_inner_lr, lambda lr: R.lr_verdict(R.adam_quadratic(prob.hvp, prob.b, o.inner_steps, lr)[1]))
        inner_lr = float(inner_lr if inner_lr is not None else o.tune_inner_lr)
        hvp_lr = o.hvp_lr
        if hvp_lr is None and o.hinv_solver == "adam" and o.hinv_steps > 1:
            delta = R.solve_quadratic(o.inner_solver, prob.hvp, prob.b, o.inner_steps, inner_lr)[0] if o.inner_steps else \
                torch.zeros_like(theta0)
            g_t = self.outer_grads(net, theta0, prob, delta, x_syn, y_syn, log_temp, xt, yt, lam, o)[3]
            hvp_lr, report["hvp_trials"] = search(o.tune_hvp_lr, lambda lr: R.lr_verdict(R.adam_quadratic(prob.hvp, g_t, o.hinv_steps, lr)[1]))
        hvp_lr = float(hvp_lr if hvp_lr is not None else o.tune_hvp_lr)
        self._passes += prob.lin.passes
        ctx.log(f"[ddlnl] rcig learning rates: inner {inner_lr:.3e} ({report['inner_trials']} trials), "
                f"hvp {hvp_lr:.3e} ({report['hvp_trials']} trials)")
        return inner_lr, hvp_lr, report

    # ------------------------------------------------------------------------------ the loop
    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        o = self.resolved_options(ctx, ipc)
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node", category=UserWarning)
        start_time = time.perf_counter()
        self._passes = 0
        dev = ctx.device
        C, size = ctx.num_classes, int(ctx.images.shape[-1])
        g = ctx.generator("rcig")
        x0, y0 = self.init_set(ctx, ipc, g, o)
        x_syn = x0.to(dev).clone().requires_grad_(True)
        y_syn = y0.to(dev).clone().requires_grad_(True)
        log_temp = torch.zeros((), device=dev, requires_grad=True)
        opt = AdaBelief([{"params": [x_syn, y_syn], "lr": o.lr_images}, {"params": [log_temp], "lr": o.lr_temp}])
        net = self._net(ctx, size, o).to(dev)
        net.requires_grad_(False)
        self.mask = R.tangent_mask(net).to(dev)
        lam = o.l2_rate * ipc * C  # flip copies not counted (RCIG)
        labels = torch.as_tensor(ctx.labels, dtype=torch.long)
        n_train = labels.shape[0]
        batch = min(o.batch_real, n_train)

        pool_base = torch.stack([self._fresh_params(ctx, size, k, o) for k in range(o.pool_size)])
        pool_m, pool_v = torch.zeros_like(pool_base), torch.zeros_like(pool_base)
        pool_steps = torch.zeros(o.pool_size, dtype=torch.long)
        ema = {"x": torch.zeros_like(x_syn.detach()), "y": torch.zeros_like(y_syn.detach()), "t": torch.zeros(())}
        scalars = {"inner_lr": -1.0, "hvp_lr": -1.0, "ema_count": 0, "resets": o.pool_size, "tune_seconds": 0.0,
                   "passes": 0}
        stats = {"inner": [], "hvp": [], "inner_log": [], "hvp_log": []}
        self.losses: list[float] = []
        state = {"images": x_syn, "labels": y_syn, "log_temp": log_temp, "opt": opt, "gen": g, "pool_base": pool_base,
                 "pool_m": pool_m, "pool_v": pool_v, "pool_steps": pool_steps, "ema_x": ema["x"], "ema_y": ema["y"],
                 "ema_t": ema["t"], "scalars": scalars, "stats": stats, "losses": self.losses}

        def real_batch():
            idx = torch.randperm(n_train, generator=g)[:batch]
            return ctx.images[idx].to(dev), labels[idx].to(dev)

        def snapshot() -> SyntheticSet:  # the current set (not its EMA, which the final set is)
            s = SyntheticSet(x_syn.detach().cpu().float(), y_syn.detach().cpu().float(), ctx.preprocess)
            s.meta.update(label_semantics="regression_targets", label_temperature=float(log_temp.detach().exp()))
            if o.use_flip:
                s.meta["decode"] = {"kind": "flip_copies"}
            return s

        loop = DistillLoop(ctx, o.iterations, state, snapshot=snapshot)
        if scalars["inner_lr"] < 0:  # not restored from a checkpoint: tune once
            t0 = time.perf_counter()
            xt, yt = real_batch()
            inner_lr, hvp_lr, rep = self.tune(ctx, net, pool_base[0], x_syn, y_syn, log_temp, xt, yt, lam, o)
            scalars.update(inner_lr=inner_lr, hvp_lr=hvp_lr, tune_seconds=time.perf_counter() - t0, **rep)
            loop.refresh()  # the tuned lrs are part of the starting state
        from tqdm.auto import tqdm

        iter_times = []
        bar = tqdm(loop, desc="rcig", initial=loop.start, total=o.iterations, disable=not ctx.progress, dynamic_ncols=True, leave=False)
        for it in bar:
            t_it = time.perf_counter()
            k = int(torch.randint(o.pool_size, (1,), generator=g))
            theta0 = pool_base[k]
            xs_d, ys_d = R.with_flips(x_syn.detach(), y_syn.detach(), o.use_flip)
            prob, delta, inner_hist = self.solve_inner(net, theta0, xs_d, ys_d, lam, scalars["inner_lr"], o)
            xt, yt = real_batch()
            gx, gy, gtau, g_t, loss, acc = self.outer_grads(net, theta0, prob, delta, x_syn, y_syn, log_temp, xt, yt, lam, o)
            if o.hinv_steps > 0:
                v, hinv_hist = R.solve_quadratic(o.hinv_solver, prob.hvp, g_t, o.hinv_steps, scalars["hvp_lr"])
                ix, iy = self.implicit_grads(net, theta0, delta, v, x_syn, y_syn, lam, o)
                if o.clip_implicit:
                    ix, iy = R.clip_to(ix, gx), R.clip_to(iy, gy)
                gx, gy = gx + ix, gy + iy
            else:
                hinv_hist = []
            self._passes += prob.lin.passes
            if not o.learn_labels:
                gy = torch.zeros_like(gy)
            opt.zero_grad(set_to_none=True)
            x_syn.grad, y_syn.grad, log_temp.grad = gx, gy, gtau
            opt.step()
            with torch.no_grad():  # EMA of the coreset, bias-corrected when read
                scalars["ema_count"] += 1
                for key, p in (("x", x_syn), ("y", y_syn), ("t", log_temp)):
                    ema[key].mul_(o.ema_decay).add_(p.detach().cpu() if key == "t" else p.detach(), alpha=1 - o.ema_decay)
            # the chosen pool model trains its base weights on the updated coreset
            xs_d, ys_d = R.with_flips(x_syn.detach(), y_syn.detach(), o.use_flip)
            n_pool = int(torch.randint(1, o.pool_max_steps, (1,), generator=g))
            new_step = self.train_pool_model(net, pool_base[k], pool_m[k], pool_v[k], int(pool_steps[k]), xs_d, ys_d,
                                             n_pool, o.pool_lr)
            pool_steps[k] = new_step
            if new_step >= o.max_online_steps:
                pool_base[k] = self._fresh_params(ctx, size, scalars["resets"], o)
                pool_m[k].zero_()
                pool_v[k].zero_()
                pool_steps[k] = 0
                scalars["resets"] += 1
            # lr monitoring (RCIG: every 50 iterations)
            stats["inner"].append(R.lr_verdict(inner_hist))
            stats["hvp"].append(R.lr_verdict(hinv_hist))
            if (it + 1) % o.lr_monitor_interval == 0:
                for key, solver in (("inner", o.inner_solver), ("hvp", o.hinv_solver)):
                    vs = np.asarray(stats[key])
                    if solver == "adam" and len(vs):
                        if np.mean(vs == -1) >= 0.29:
                            scalars[f"{key}_lr"] *= 0.9
                        elif np.mean(vs == 1) >= 0.7:
                            scalars[f"{key}_lr"] *= 1.05
                    stats[f"{key}_log"].append([it + 1, float(np.mean(vs == 1)), float(np.mean(vs == -1)), scalars[f"{key}_lr"]])
                    stats[key] = []
            scalars["passes"] = int(scalars["passes"]) + self._passes
            self._passes = 0
            if loop.report(loss):
                self.losses.append(loss)
            iter_times.append(time.perf_counter() - t_it)
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.2f}")
            if it % o.log_every == 0 or it == o.iterations - 1:
                ctx.log(f"[ddlnl] rcig it {it}/{o.iterations}: outer loss {loss:.4f} acc {acc:.3f} "
                        f"temp {float(log_temp.detach().exp()):.2f} inner {inner_hist[:1]}->{inner_hist[-1:]} "
                        f"({time.perf_counter() - t_it:.2f} s/it)")
        ctx.timings["distill"] = time.perf_counter() - start_time
        ctx.timings["rcig_tune"] = scalars["tune_seconds"]
        ctx.images_processed += int(scalars["passes"])
        corr = 1.0 - o.ema_decay ** max(int(scalars["ema_count"]), 1)
        if scalars["ema_count"] == 0:  # no iterations: the initial set
            x_out, y_out, t_out = x_syn.detach(), y_syn.detach(), log_temp.detach().cpu()
        else:
            x_out, y_out, t_out = ema["x"] / corr, ema["y"] / corr, ema["t"] / corr
        out = SyntheticSet(x_out.detach().cpu().float(), y_out.detach().cpu().float(), ctx.preprocess)
        out.meta["applied_options"] = asdict(o)  # as DATM: the options this run used (setting: auto applied)
        out.meta["label_semantics"] = "regression_targets"
        out.meta["label_temperature"] = float(torch.exp(t_out))
        if o.use_flip:
            out.meta["decode"] = {"kind": "flip_copies"}
        out.meta["rcig"] = {
            "losses_first_last": self.losses[:1] + self.losses[-1:],
            "inner_lr": scalars["inner_lr"], "hvp_lr": scalars["hvp_lr"], "lambda": lam,
            "tune_seconds": scalars["tune_seconds"], "inner_trials": scalars.get("inner_trials", 0),
            "hvp_trials": scalars.get("hvp_trials", 0), "lr_log": {"inner": stats["inner_log"], "hvp": stats["hvp_log"]},
            "pool_resets": int(scalars["resets"]) - o.pool_size, "rejected_steps": loop.rejected,
            "seconds_per_iteration": float(np.median(iter_times)) if iter_times else None,
            "network": {"name": "rcig_convnet", "width": o.width, "depth": o.depth, "softplus_temp": o.softplus_temp},
        }
        return out
