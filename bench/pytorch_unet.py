"""PyTorch's half of the side-by-side speed benchmark (bench/vs_pytorch.sh runs both halves).

The same network, loss, optimiser, shapes and timing protocol as
crates/train/examples/vs_pytorch.rs, written from scratch in PyTorch (nnU-Net is not
imported):

- nnU-Net's PlainConvUNet (dynamic_network_architectures): 4 stages of 16-32-64-128 channels,
  strides 1, 2, 2, 2 (strided 3x3 convs down-sample), 2 x (conv 3 with bias -> InstanceNorm
  affine eps 1e-5 -> LeakyReLU 0.01 in place) per stage in encoder and decoder, transposed-conv
  up-sampling (kernel = stride = 2), 1x1 segmentation heads, deep supervision, 3 classes;
  InitWeights_He(1e-2) (kaiming_normal_(a=1e-2), zero biases).
- loss: nnU-Net's DC_and_CE_loss (MemoryEfficientSoftDiceLoss with batch_dice=True,
  do_bg=False, smooth 1e-5, plus RobustCrossEntropyLoss, weights 1 and 1) wrapped in its
  DeepSupervisionWrapper with weights 1/2^i, lowest resolution 0, normalised (2/3, 1/3, 0); the
  target is down-sampled nearest-exact per output, as crates/train/src/losses/ does inside the
  loss.
- optimiser: torch.optim.SGD(lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5).

Also at the shapes of SSHSNet's stage-2 3D U-Net (infer3d_s2, train3d_s2; see vs_pytorch.rs):
5 stages of 16-32-64-128-256 channels, strides 1, 2, 2, (1, 2, 2), (1, 2, 2), 22 input channels,
21 classes, batch 2 x 24 x 64 x 80.

Usage: python bench/pytorch_unet.py [--only infer2d|infer3d|train2d|train3d|infer3d_s2|train3d_s2|matmul]
       [--runs N] [--warmup N] [--matmul-size N]

Prints one JSON object per workload, with the same fields as the Rust side.
"""

import argparse
import json
import resource
import statistics
import sys
import time
import warnings

# The PyPI wheel warns at import when NumPy is missing; nothing here uses NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

CLASSES = 3
WIDTHS = [16, 32, 64, 128]
SHAPE_2D = (4, 1, 256, 256)
SHAPE_3D = (2, 1, 64, 64, 32)
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 3e-5
NEGATIVE_SLOPE = 1e-2
STAGE2_CLASSES = 21
STAGE2_WIDTHS = [16, 32, 64, 128, 256]
STAGE2_STRIDES = [(1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
STAGE2_SHAPE = (2, 1 + STAGE2_CLASSES, 24, 64, 80)
WORKLOADS = ["infer2d", "infer3d", "train2d", "train3d", "infer3d_s2", "train3d_s2", "matmul"]
THREADS = 2


# ------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """Conv (with bias, 'same' padding before striding) -> InstanceNorm (affine) -> LeakyReLU."""

    def __init__(self, dims, c_in, c_out, kernel, stride):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        self.conv = conv(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=True)
        self.norm = norm(c_out, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x):
        return self.nonlin(self.norm(self.conv(x)))


class StackedConvBlocks(nn.Module):
    def __init__(self, dims, n_convs, c_in, c_out, kernel, initial_stride):
        super().__init__()
        self.convs = nn.Sequential(
            *[
                ConvNormAct(dims, c_in if i == 0 else c_out, c_out, kernel, initial_stride if i == 0 else 1)
                for i in range(n_convs)
            ]
        )

    def forward(self, x):
        return self.convs(x)


class PlainConvUNet(nn.Module):
    def __init__(self, dims, in_channels, num_classes, features, strides, n_conv=2, n_conv_decoder=2, kernel=3):
        super().__init__()
        self.deep_supervision = True
        n = len(features)
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for stage, f in enumerate(features):
            self.encoder.append(StackedConvBlocks(dims, n_conv, c_in, f, kernel, strides[stage]))
            c_in = f
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.transpconvs = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for s in range(n - 1):
            below, skip, stride = features[n - 1 - s], features[n - 2 - s], strides[n - 1 - s]
            self.transpconvs.append(up(below, skip, stride, stride=stride, bias=True))
            self.decoder.append(StackedConvBlocks(dims, n_conv_decoder, 2 * skip, skip, kernel, 1))
            self.seg_layers.append(conv(skip, num_classes, 1, 1, 0, bias=True))
        self.apply(init_he)

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        levels = len(self.decoder)
        for level, (up, stage, head) in enumerate(zip(self.transpconvs, self.decoder, self.seg_layers)):
            x = stage(torch.cat((up(x), skips.pop()), 1))
            if self.deep_supervision or level == levels - 1:
                outputs.append(head(x))
        return outputs[::-1]


def init_he(module):
    """nnU-Net's InitWeights_He(1e-2)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Spec:
    """A network and its input: dims, features per stage, stride per stage and axis, classes."""

    def __init__(self, dims, shape, features=WIDTHS, strides=None, classes=CLASSES):
        self.dims, self.shape, self.features, self.classes = dims, shape, features, classes
        self.strides = strides or [(1,) * dims] + [(2,) * dims] * (len(features) - 1)


def build(spec):
    return PlainConvUNet(spec.dims, spec.shape[1], spec.classes, spec.features, spec.strides)


def forward_flops(spec, deep_supervision, n_conv=2, n_conv_decoder=2, kernel=3):
    """Analytic conv FLOPs of one forward pass, exactly as forward_flops in vs_pytorch.rs."""
    dims, shape, features, strides = spec.dims, spec.shape, spec.features, spec.strides
    batch, in_channels, spatial = shape[0], shape[1], list(shape[2:])
    k = kernel**dims
    flops = 0.0
    sizes = []
    c_in = in_channels
    for stage, f in enumerate(features):
        spatial = [s // stride for s, stride in zip(spatial, strides[stage])]
        voxels = prod(spatial)
        for conv in range(n_conv):
            flops += 2.0 * (c_in if conv == 0 else f) * f * k * voxels
        c_in = f
        sizes.append(voxels)
    n = len(features)
    for level in range(n - 1):
        below, skip = features[n - 1 - level], features[n - 2 - level]
        flops += 2.0 * below * skip * prod(strides[n - 1 - level]) * sizes[n - 1 - level]
        voxels = sizes[n - 2 - level]
        for conv in range(n_conv_decoder):
            flops += 2.0 * (2 * skip if conv == 0 else skip) * skip * k * voxels
        if deep_supervision or level == n - 2:
            flops += 2.0 * skip * spec.classes * voxels
    return flops * batch


def prod(values):
    out = 1
    for v in values:
        out *= v
    return out


# ------------------------------------------------------------------------------------------
# The loss (crates/train/src/losses/, nnU-Net's DC_and_CE_loss + DeepSupervisionWrapper)
# ------------------------------------------------------------------------------------------


def soft_dice(probs, target, smooth=1e-5):
    """MemoryEfficientSoftDiceLoss's Dice (batch_dice=True, do_bg=False), without the sign."""
    axes = [0] + list(range(2, probs.ndim))
    with torch.no_grad():
        onehot = torch.zeros_like(probs).scatter_(1, target, 1)[:, 1:]
        sum_gt = onehot.sum(axes)
    probs = probs[:, 1:]
    intersect = (probs * onehot).sum(axes)
    sum_pred = probs.sum(axes)
    dice = (2 * intersect + smooth) / torch.clip(sum_gt + sum_pred + smooth, 1e-8)
    return dice.mean()


def dice_ce(logits, target):
    """DC_and_CE_loss: CE (mean over voxels) - soft Dice."""
    ce = F.cross_entropy(logits, target[:, 0])
    return ce - soft_dice(torch.softmax(logits, 1), target)


def deep_supervision_weights(n):
    weights = [0.5**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_labels(target, spatial):
    """Nearest-exact down-sampling by integer factors (output i takes input i * f + f // 2)."""
    index = [slice(None), slice(None)]
    for size, out in zip(target.shape[2:], spatial):
        f = size // out
        index.append(slice(f // 2, None, f))
    return target[tuple(index)]


def deep_supervision_loss(outputs, target, weights):
    total = None
    for logits, weight in zip(outputs, weights):
        if weight == 0:
            continue
        term = weight * dice_ce(logits, downsample_labels(target, logits.shape[2:]))
        total = term if total is None else total + term
    return total


# ------------------------------------------------------------------------------------------
# Workloads
# ------------------------------------------------------------------------------------------


def measure(run, runs, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), len(times)


def inference(spec, args):
    model = build(spec).eval()
    model.deep_supervision = False
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(spec.shape)

    def run():
        with torch.inference_mode():
            outputs = model(x)
        assert len(outputs) == 1 and outputs[0].shape[1] == spec.classes

    return measure(run, args.runs, args.warmup), forward_flops(spec, False) / 1e9, params


def training_step(spec, args):
    shape = spec.shape
    model = build(spec).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LEARNING_RATE, momentum=0.99, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    weights = deep_supervision_weights(len(model.decoder))
    x = torch.randn(shape)
    target = torch.randint(0, spec.classes, (shape[0], 1) + tuple(shape[2:]))

    def run():
        optimizer.zero_grad(set_to_none=True)
        loss = deep_supervision_loss(model(x), target, weights)
        loss.backward()
        optimizer.step()

    return measure(run, args.runs, args.warmup), 3 * forward_flops(spec, True) / 1e9, params


def matmul(args):
    n = args.matmul_size
    a, b = torch.randn(n, n), torch.randn(n, n)

    def run():
        c = a @ b
        assert c.shape == (n, n)

    return measure(run, args.runs, args.warmup), 2 * n**3 / 1e9, None


def proc_status_mib(field):
    """A field of /proc/self/status in MiB (VmHWM = peak resident set, VmRSS = current)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field == "VmHWM:":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=WORKLOADS)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--matmul-size", type=int, default=2048)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    base_rss_mb = proc_status_mib("VmRSS:")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    print(
        f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"mkldnn={torch.backends.mkldnn.is_available()}",
        file=sys.stderr,
    )
    stage2 = Spec(3, STAGE2_SHAPE, STAGE2_WIDTHS, STAGE2_STRIDES, STAGE2_CLASSES)
    workloads = {
        "infer2d": lambda: inference(Spec(2, SHAPE_2D), args),
        "infer3d": lambda: inference(Spec(3, SHAPE_3D), args),
        "train2d": lambda: training_step(Spec(2, SHAPE_2D), args),
        "train3d": lambda: training_step(Spec(3, SHAPE_3D), args),
        "infer3d_s2": lambda: inference(stage2, args),
        "train3d_s2": lambda: training_step(stage2, args),
        "matmul": lambda: matmul(args),
    }
    for name in [args.only] if args.only else WORKLOADS:
        (median_s, min_s, runs), gflop, params = workloads[name]()
        record = {
            "side": "pytorch",
            "workload": name,
            "median_s": round(median_s, 6),
            "min_s": round(min_s, 6),
            "runs": runs,
            "gflop": round(gflop, 6),
            "params": params,
            "peak_rss_mb": round(proc_status_mib("VmHWM:"), 6),
            "base_rss_mb": None if base_rss_mb is None else round(base_rss_mb, 6),
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
