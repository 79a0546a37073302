"""A small convolutional-network library in NumPy.

Layers, loss, initializers, LeNet-5, optimizers, learning-rate schedules, augmentation and
data parallelism.
"""

from nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from nn.augment import augment
from nn.conv import Conv2d
from nn.dropout import Dropout
from nn.init import initialize
from nn.lenet import feature_maps, lenet5
from nn.linear import Flatten, Linear
from nn.loss import SoftmaxCrossEntropy, log_softmax, softmax
from nn.module import Module, Sequential
from nn.parallel import DataParallel
from nn.optim import SGD, Adam, AdamW, make_optimizer
from nn.pool import AvgPool2d, MaxPool2d
from nn.schedules import learning_rate
from nn.serialization import load_model, save_model

__all__ = [
    "Adam", "AdamW", "AvgPool2d", "Conv2d", "DataParallel", "Dropout", "Flatten", "LeakyReLU", "Linear",
    "MaxPool2d", "Module", "ReLU", "SGD", "Sequential", "Sigmoid", "SoftmaxCrossEntropy", "Tanh",
    "augment", "feature_maps", "initialize", "learning_rate", "lenet5", "load_model", "log_softmax", "make_optimizer",
    "save_model",
    "softmax",
]
