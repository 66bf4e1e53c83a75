"""The reference backend: every op is a torch.nn.functional call."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Backend:
    name = "torch"
    # mkldnn on CPU and cuDNN on GPU both run NCHW well; channels-last is supported
    # (pass such inputs and `net.to(memory_format=torch.channels_last)`) and measured
    # in bench/lowering.py.
    memory_format = torch.contiguous_format

    def conv(self, x, weight, bias, padding, relu):
        y = F.conv2d(x, weight, bias, padding=padding)
        # In place is safe: conv's backward needs its input and weight, not its output.
        return F.relu(y, inplace=True) if relu else y

    def relu(self, x):
        return F.relu(x)

    # Pooling windows: kernel × kernel, stride; `ceil` rounds the output size up (Caffe's
    # rounding, torch's ceil_mode) rather than down. The defaults are the notation's maxpool.
    def max_pool(self, x, kernel=2, stride=2, ceil=False):
        return F.max_pool2d(x, kernel, stride, ceil_mode=ceil)

    def avg_pool(self, x, kernel=2, stride=2, ceil=False):
        return F.avg_pool2d(x, kernel, stride, ceil_mode=ceil)

    def lrn(self, x, size, alpha, beta, k):
        # AlexNet's formula multiplies the plain sum of squares by alpha; torch (like
        # Caffe) divides alpha by the window size, hence alpha * size here.
        return F.local_response_norm(x, size, alpha * size, beta, k)

    def batch_norm(self, x, running_mean, running_var, weight, bias, training, momentum, eps):
        return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)

    def linear(self, x, weight, bias, relu):
        y = F.linear(x, weight, bias)
        return F.relu(y, inplace=True) if relu else y

    def dropout(self, x, p, training):
        return F.dropout(x, p, training, inplace=False)

    def spatial_mean(self, x):
        return x.mean(dim=(2, 3))

    def softmax(self, x):
        return torch.softmax(x.float(), dim=1)

    def cross_entropy(self, logits, target):
        # At least float32 (bf16 logits are promoted); float64 stays float64.
        return F.cross_entropy(logits if logits.dtype == torch.float64 else logits.float(), target)
