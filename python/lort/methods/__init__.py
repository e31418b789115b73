"""Classifier re-training methods (stage 2) as records of parts.

Every method of the paper's Table 1 is a :class:`Method` in :data:`METHODS`; the functions
below turn its parts into torch objects::

    method = get_method("lort")
    init = stage1_init(model.head.state_dict(), prefix="")  # lort.stage1.losses: nn.Linear
    head = make_head(method, feature_dim, num_classes, init=init)
    loss_fn = make_loss(method, train_counts, smooth=0.98)
    weights = make_sampler_weights(method, train_labels)   # None: plain shuffling
    ...  loss_fn(head(features), labels).backward(); opt.step()
    apply_constraint(method, head, radius)                  # after every epoch
    logits = inference_logits(method, head, test_features, train_counts)
    norms = inference_weight_norms(method, head, tau=1.0)   # ||w_c|| as applied at inference
"""

from lort.methods.base import METHODS, TABLE1, Method, get_method
from lort.methods.constraints import (
    apply_constraint,
    constraint_radius,
    max_norm_,
    maxnorm_radius,
)
from lort.methods.heads import CosineHead, LinearHead, LWSHead, StageTwoHead, make_head
from lort.methods.inference import (
    WEIGHT_NORM_DEFINITION,
    FoldedHead,
    fold_inference,
    inference_logits,
    inference_weight_norms,
    tau_normalised_weight,
)
from lort.methods.losses import (
    LossFn,
    SoftmaxLoss,
    class_balanced_weights,
    ldam_margins,
    log_prior,
    make_loss,
)
from lort.methods.sampling import class_balanced_sample_weights, make_sampler_weights
from lort.methods.targets import check_delta, rho, soft_target

__all__ = [
    "METHODS",
    "TABLE1",
    "WEIGHT_NORM_DEFINITION",
    "CosineHead",
    "FoldedHead",
    "LWSHead",
    "LinearHead",
    "LossFn",
    "Method",
    "SoftmaxLoss",
    "StageTwoHead",
    "apply_constraint",
    "check_delta",
    "class_balanced_sample_weights",
    "class_balanced_weights",
    "constraint_radius",
    "fold_inference",
    "get_method",
    "inference_logits",
    "inference_weight_norms",
    "ldam_margins",
    "log_prior",
    "make_head",
    "make_loss",
    "make_sampler_weights",
    "max_norm_",
    "maxnorm_radius",
    "rho",
    "soft_target",
    "tau_normalised_weight",
]
