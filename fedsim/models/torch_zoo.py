"""Built-in PyTorch modules: ``softmax``, ``mlp``, ``cnn`` as in numpy, ``lstm`` and ``resnet``.

The first three keep the numpy models' parameter layout exactly (same order, same shapes, dense
weights stored (fan_in, fan_out), kernels stored (row offset, column offset, input channel,
output channel), the CNN's dense layer reading the pooled map as (row, column, channel)), so
one flat vector means the same model under either backend and they start from the numpy
models' initial vectors. ``lstm`` is the character model of McMahan et al. (2017) and
``resnet`` a small ResNet for 32x32 images with GroupNorm in place of BatchNorm (Hsieh et al.
2020 show BatchNorm's statistics break under non-IID clients).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812  (the usual alias)
from torch import nn

from fedsim.models.images import image_size


class Dense(nn.Module):
    """``x @ weight + bias`` with the weight stored (fan_in, fan_out), as the numpy models."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None
        bound = math.sqrt(6.0 / fan_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weight
        return z + self.bias if self.bias is not None else z


class DenseNet(nn.Module):
    """Dense ReLU layers of widths ``hidden`` on the flattened input, then linear logits."""

    def __init__(
        self, num_features: int, num_classes: int, hidden: tuple[int, ...] = (), bias: bool = True
    ) -> None:
        super().__init__()
        widths = (num_features, *hidden, num_classes)
        self.layers = nn.ModuleList(
            Dense(a, b, bias) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            a = layer(a)
            if i < len(self.layers) - 1:
                a = F.relu(a)
        return a


class Conv(nn.Module):
    """A "same" convolution whose kernel is stored (k, k, c_in, c_out), as the numpy CNN."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(kernel, kernel, c_in, c_out))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (kernel * kernel * c_in)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.permute(3, 2, 0, 1), self.bias, padding="same")


class McMahanCnn(nn.Module):
    """conv-pool-ReLU, conv-pool-ReLU, dense-ReLU, dense (the numpy ``cnn``, layer for layer)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        channels: tuple[int, int],
        hidden: int,
        kernel: int,
    ) -> None:
        """The sizes are the numpy :class:`fedsim.models.cnn.Cnn`'s, checked and defaulted by it
        (``cnn.make_cnn`` passes them)."""
        super().__init__()
        self.height, self.width = image_size(input_shape)
        (c1, c2), k = channels, kernel
        self.conv1 = Conv(1, c1, k)
        self.conv2 = Conv(c1, c2, k)
        self.fc = Dense((self.height // 4) * (self.width // 4) * c2, hidden)
        self.out = Dense(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.reshape(x.shape[0], 1, self.height, self.width)
        # relu(maxpool(z)) == maxpool(relu(z)); pooling first matches the numpy model's order.
        a = F.relu(F.max_pool2d(self.conv1(a), 2))
        a = F.relu(F.max_pool2d(self.conv2(a), 2))
        a = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)  # (row, column, channel)
        return self.out(F.relu(self.fc(a)))


class CharLstm(nn.Module):
    """Embedding, stacked LSTM, dense logits from the last step (McMahan et al. 2017).

    The sizes are given by :class:`fedsim.models.torch_models.LstmOptions`, which holds their
    defaults.
    Input: (B, T) token ids (given as numbers; cast to integers by the backend).
    """

    def __init__(
        self, num_classes: int, vocab_size: int, embedding: int, hidden: int, layers: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.embed(x))
        return self.out(seq[:, -1])


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a shortcut (1x1 convolution when shapes change)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(groups, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(a)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: a 3x3 stem, three stages of ``blocks`` basic blocks (``width``,
    2x, 4x channels, strides 1, 2, 2), global average pooling, dense logits. ``blocks = 3``
    is ResNet-20 (with GroupNorm). The sizes are given by
    :class:`fedsim.models.torch_models.ResNetOptions`, which holds their defaults."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, blocks: int, width: int, groups: int
    ) -> None:
        super().__init__()
        c_in = int(input_shape[0])
        self.stem = nn.Conv2d(c_in, width, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(groups, width)
        stages: list[nn.Module] = []
        c = width
        for stage, stride in enumerate((1, 2, 2)):
            c_out = width * 2**stage
            for b in range(blocks):
                stages.append(BasicBlock(c, c_out, stride if b == 0 else 1, groups))
                c = c_out
        self.stages = nn.Sequential(*stages)
        self.out = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.norm(self.stem(x)))
        a = self.stages(a)
        return self.out(a.mean(dim=(2, 3)))
