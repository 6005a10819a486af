"""The registry of distillation methods: name -> method class (a ``DistillMethod``). A new method is one module plus
one line here."""

from ssdistill.methods.bingo import BINGO
from ssdistill.methods.cka import CKA
from ssdistill.methods.disco import DisCo
from ssdistill.methods.feature import FeatureDistillation
from ssdistill.methods.lmcl.method import LMCL
from ssdistill.methods.mcl import MCL
from ssdistill.methods.moco import MoCoV2
from ssdistill.methods.mvmr import MVMR
from ssdistill.methods.rob.method import RoB
from ssdistill.methods.seed import SEED

METHODS = {cls.name: cls for cls in (FeatureDistillation, MVMR, MoCoV2, SEED, DisCo, BINGO, MCL, LMCL, CKA, RoB)}
