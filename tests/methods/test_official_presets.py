"""``method.preset: official`` sets every documented switch to the official code's behaviour, and every setting that
departs from it (or, for knobs the official code lacks, from our default) is reported by ``deviations()``."""

import typing

import pytest
from pydantic import BaseModel

from ssdistill.config import SELECTS
from ssdistill.errors import ConfigError
from ssdistill.methods.registry import METHODS
from ssdistill.recipe import build_config

# The official behaviour as the method pages document it (docs/methods/mvmr.md, bingo.md, baselines.md), written
# out here independently of the fields' declarations.
DOCUMENTED = {
    ("mvmr", "kd"): {
        "dcor_estimator": "biased",
        "std_eps": 0.0,
        "dcor_input_scaling": "official",
        "dcor_clamp": 1e-4,
        "projector": [8192, 8192, 8192],
        "std_gamma": 1.0,
        "weights": {},
        "representations": [],
    },
    ("mvmr", "ssl"): {
        "dcor_estimator": "biased",
        "std_eps": 0.0,
        "dcor_input_scaling": "official",
        "handcrafted_sign": "released",
        "hog_binning": "released",
        "representations": ["raw", "hog", "local_std", "scattering", "reaugmented"],
        "projector": [8192, 8192, 8192],
        "dcor_clamp": 1e-4,
        "std_gamma": 1.0,
        "weights": {},
    },
    ("bingo", None): {
        "loss_form": "official",
        "warm_epochs": 10,
        "teacher_bn": "train",
        "teacher_keys": "online",
        "mask_same_id": False,
        "temperature": 0.2,
        "queue_size": 65536,
        "bag_size": 5,
        "head_hidden": [2048],
    },
    ("seed", None): {
        "teacher_view": "same",
        "student_temperature": 0.2,
        "teacher_temperature": 1e-4,
        "mask_same_id": False,
        "queue_size": 65536,
        "head_hidden": None,  # one hidden layer as wide as the backbone
    },
    ("disco", None): {
        "teacher_view": "same",
        "distill_weight": 32.0,
        "head_hidden": [2048],
        "momentum": 0.999,
        "temperature": 0.2,
        "teacher_bn": "train",
        "mask_same_id": False,
        "queue_size": 65536,
        "out_dim": None,  # the teacher's width
    },
    ("moco", None): {
        "momentum": 0.999,
        "temperature": 0.2,
        "out_dim": 128,
        "queue_size": 65536,
        "mask_same_id": False,
        "head_hidden": None,
    },
    # docs/methods/mcl.md (MoCo+MCL: MoCo-v1 head, τ 0.07, K 65536, m 0.999, all weights 1, T 3) and 4.4 (CIFAR: Embed
    # Linear-ReLU-Linear to 128, τ 0.1, α = β = 0.1, γ = λ = 1, T 3, the diagonal mask reused in ICL, no logit KD)
    ("mcl", "label_free"): {
        "head": "linear",
        "out_dim": 128,
        "temperature": 0.07,
        "kl_temperature": 3.0,
        "vcl_weight": 1.0,
        "icl_weight": 1.0,
        "soft_vcl_weight": 1.0,
        "soft_icl_weight": 1.0,
        "momentum": 0.999,
        "queue_size": 65536,
        "mask_same_id": False,
    },
    ("mcl", "supervised"): {
        "head": "mlp",
        "head_hidden": None,
        "out_dim": 128,
        "temperature": 0.1,
        "kl_temperature": 3.0,
        "vcl_weight": 0.1,
        "icl_weight": 0.1,
        "soft_vcl_weight": 1.0,
        "soft_icl_weight": 1.0,
        "icl_include_self_pair": False,
        "logit_kd_weight": 0.0,
    },
    ("lmcl", "supervised"): {
        "branch": "copy",
        "out_dim": 128,
        "temperature": 0.1,
        "kl_temperature": 3.0,
        "vcl_weight": 0.1,
        "icl_weight": 0.1,
        "soft_vcl_weight": 1.0,
        "soft_icl_weight": 1.0,
        "pair_count": "official",
        "icl_include_self_pair": False,
        "aggregator": True,
        "logit_kd_weight": 1.0,
        "meta": True,
        "meta_every": 50,
        "meta_steps": 2,
        "meta_outer_step": True,
        "weighting_dim": 128,
    },
}
MODES = {"mvmr": ("kd", "ssl"), "mcl": ("label_free", "supervised"), "lmcl": ("supervised", "label_free")}
WITH_OFFICIAL_CODE = sorted({name for name, _ in DOCUMENTED})

# (settings under which a field has an effect, settings under which it has none): where it has none it is never
# listed, since it changes nothing
CONTEXT = {
    "bank_repeats": {"seed": ({"teacher_view": "bank"}, {"teacher_view": "same"}), "bingo": ({"teacher_keys": "bank"}, {"teacher_keys": "online"})},
    "teacher_bn_groups": {"bingo": ({"teacher_bn": "train"}, {"teacher_bn": "eval"}), "disco": ({"teacher_bn": "train"}, {"teacher_bn": "eval"})},
    "teacher_bn": {
        "bingo": ({"teacher_keys": "online"}, {"teacher_keys": "bank"}),
        "disco": ({"teacher_view": "same"}, {"teacher_view": "original"}),
    },
    "warm_epochs": {"bingo": ({"loss_form": "official"}, {"loss_form": "paper"})},
    "handcrafted_sign": {"mvmr": ({"mode": "ssl"}, {"mode": "kd"})},
    "head_hidden": {"mcl": ({"head": "mlp"}, {"head": "linear"})},
    "icl_include_self_pair": {"mcl": ({"mode": "supervised"}, {"mode": "label_free"}), "lmcl": ({"mode": "supervised"}, {"mode": "label_free"})},
    "logit_kd_weight": {
        "mcl": ({"mode": "supervised"}, {"mode": "label_free"}),
        "lmcl": ({"mode": "supervised", "aggregator": True}, {"mode": "supervised", "aggregator": False}),
    },
    **{field: {"mcl": ({"mode": "label_free"}, {"mode": "supervised"})} for field in ("momentum", "bn_groups", "queue_size", "mask_same_id")},
    "hog_binning": {"mvmr": ({"mode": "ssl"}, {"mode": "kd"})},
    "teacher_whitening": {"mvmr": ({"mode": "kd"}, {"mode": "ssl"})},
    "teacher_on": {"mvmr": ({"mode": "kd"}, {"mode": "ssl"})},
    "whitening_shrinkage": {"mvmr": ({"mode": "kd", "teacher_whitening": "pca"}, {"mode": "kd", "teacher_whitening": "none"})},
    # L-MCL: the supervised-only fields, the meta step's, the light branch's width
    "aggregator": {"lmcl": ({"mode": "supervised"}, {"mode": "label_free"})},
    **{
        f: {"lmcl": ({"meta": True}, {"meta": False})}
        for f in ("meta_every", "meta_steps", "meta_outer_step", "meta_lr", "meta_weight_decay", "weighting_dim")
    },
    "branch_width": {"lmcl": ({"branch": "light"}, {"branch": "copy"})},
}


def _method(name, **fields):
    return build_config({"method": {"name": name, **fields}}).method


@pytest.mark.parametrize("key", sorted(DOCUMENTED, key=str), ids=lambda key: "-".join(k for k in key if k))
def test_official_preset_sets_every_documented_switch_and_deviates_from_nothing(key):
    name, mode = key
    mode_setting = {"mode": mode} if mode else {}
    config = _method(name, preset="official", **mode_setting)
    for field, value in DOCUMENTED[key].items():
        assert config.effective(field) == value, (name, field)
    assert config.deviations() == []
    # the preset sets the method section; a view the official code fixes is the recipe's (supervised MCL: cifar_basic)
    recipe = RECIPE_SECTIONS.get(key, {})
    assert METHODS[name].deviations(build_config({"method": {"name": name, "preset": "official", **mode_setting}, **recipe})) == []
    if recipe:
        assert METHODS[name].deviations(build_config({"method": {"name": name, "preset": "official", **mode_setting}})) != []


CIFAR_RECIPE = {  # the official supervised CIFAR recipe of MCL and L-MCL: its view and optimiser
    "aug": {"recipe": "cifar_basic"},
    "optim": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "warmup_epochs": 0},
}
RECIPE_SECTIONS = {("mcl", "supervised"): CIFAR_RECIPE, ("lmcl", "supervised"): CIFAR_RECIPE}


def test_explicit_settings_win_over_the_preset_and_are_recorded():
    config = _method("mvmr", preset="official", dcor_estimator="unbiased", projector=[64, 64])
    assert config.dcor_estimator == "unbiased" and config.std_eps == 0.0
    assert config.deviations() == ["projector: [64, 64] (official: [8192, 8192, 8192])", "dcor_estimator: unbiased (official: biased)"]
    bingo = _method("bingo", preset="official", warm_epochs=2)
    assert bingo.deviations() == ["warm_epochs: 2 (official: 10)"] and bingo.teacher_bn == "train"


def test_our_defaults_are_recorded_where_they_are_not_the_official_behaviour():
    assert "dcor_estimator: unbiased (official: biased)" in _method("mvmr").deviations()
    assert "teacher_bn: eval (official: train)" in _method("bingo").deviations()
    assert _method("moco").deviations() == []  # our MoCo-v2 defaults are the official ones
    assert _method("seed").deviations() == []


def test_a_method_without_official_code_has_no_official_preset():
    with pytest.raises(ConfigError, match="method 'feature' has no official code to reproduce"):
        _method("feature", preset="official")
    assert _method("feature", loss="mse").deviations() == []  # a baseline of ours has nothing to deviate from


def test_cached_teacher_outputs_make_the_teacher_batchnorm_switch_moot():
    """Cached keys are eval-mode outputs: with them teacher_bn has no effect, the preset leaves it at eval and only the
    cache is listed; asking for batch statistics with a cache is a one-line error."""
    bingo = _method("bingo", preset="official", teacher_keys="bank")
    assert bingo.teacher_bn == "eval" and bingo.deviations() == ["teacher_keys: bank (official: online)"]
    disco = _method("disco", teacher_view="original")
    assert "teacher_bn" not in " ".join(disco.deviations()) and "teacher_view: original (official: same)" in disco.deviations()
    assert "teacher_bn: eval (official: train)" in _method("disco").deviations()
    with pytest.raises(ConfigError, match="teacher_bn=train needs method.teacher_keys=online"):
        _method("bingo", teacher_bn="train", teacher_keys="bank")
    with pytest.raises(ConfigError, match="teacher_bn=train needs method.teacher_view=same"):
        _method("disco", teacher_bn="train", teacher_view="original")


def test_the_preset_cannot_be_changed_after_the_section_is_built():
    config = _method("bingo")
    with pytest.raises(Exception, match="frozen"):
        config.preset = "official"


def test_float_departures_are_compared_relatively_and_default_weights_are_not_departures():
    assert "std_eps: 1e-13 (official: 0.0)" in _method("mvmr", preset="official", std_eps=1e-13).deviations()
    assert _method("mvmr", preset="official", weights={"mse": 1.0, "views": 1}).deviations() == []
    assert _method("mvmr", preset="official", weights={"mse": 0.5}).deviations() == ["weights: {mse: 0.5} (official: {})"]


def _candidates(annotation, default, official):
    """Values of a field's type to try: its choices, or variations of its default and official value."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return list(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [v for arg in args for v in ([None] if arg is type(None) else _candidates(arg, default, official))]
    if annotation is bool:
        return [True, False]
    if annotation in (int, float):
        base = [v or 1 for v in (default, official) if isinstance(v, (int, float))] or [1]  # 0 would only vary to 0
        return [annotation(v) for b in base for v in (b * 2, b / 2 if annotation is float else b + 1)]
    if origin is list:
        item = args[0]
        if typing.get_origin(item) is typing.Literal:
            return [[typing.get_args(item)[0]], list(typing.get_args(item)[:2])]
        return [[7], [7, 7]]
    if origin is dict:
        return [{"mse": 2.0}, {}]
    raise AssertionError(f"no candidate values for a field of type {annotation}: extend _candidates")


def _fields(name):
    config_class = METHODS[name].config_class
    for field, info in config_class.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if field != "name" and not extra.get("selects"):
            yield field, info


# fields that only ever restate a fact fixed elsewhere (never departures); listed so that a new one is a decision
MOOT = {("disco", "out_dim")}
REFUSED_WITHOUT_EFFECT = {
    ("lmcl", "branch_width")
}  # set with branch=copy it is an error, not a silent no-op  # DisCo's embedding must be as wide as the teacher's: build time rejects anything else


@pytest.mark.parametrize("name", WITH_OFFICIAL_CODE)
def test_every_setting_that_departs_from_the_reference_is_reported(name):
    """Walk every field: each value (of its type) other than the official one, or for knobs the official code lacks
    other than our default, must appear in deviations(); the reference value itself must not. A field that has no
    effect without its enabling setting must not be listed then."""
    config_class = METHODS[name].config_class
    checked, silent = set(), set()
    for mode in MODES.get(name, (None,)):
        base = {"mode": mode} if mode else {}
        for field, info in _fields(name):
            default = info.get_default(call_default_factory=True)
            contexts = CONTEXT.get(field, {}).get(name)
            for enabled in (True, False) if contexts else (True,):
                settings = {**base, **(contexts[0 if enabled else 1] if contexts else {})}
                # a knob the official code lacks: our default, as it takes effect (a None default resolves by mode)
                reference = config_class.official_values(settings).get(field, _method(name, **settings).effective(field))
                for value in _candidates(info.annotation, default, reference):
                    try:
                        config = _method(name, **settings, **{field: value})
                    except ConfigError:
                        continue  # not a valid value here (a bound or a cross-field rule)
                    listed = [d for d in config.deviations() if d.startswith(f"{field}: ")]
                    same = config.effective(field) == reference or (
                        isinstance(reference, float) and config.effective(field) == pytest.approx(reference)
                    )
                    if same or not enabled or (name, field) in MOOT:
                        assert listed == [], (name, mode, field, value, listed)
                        silent.add(field) if not same else None
                    else:
                        assert len(listed) == 1, (name, mode, field, value, config.deviations())
                        checked.add(field)
    every = {field for field, _ in _fields(name)}
    assert checked == every - {field for n, field in MOOT if n == name}  # every field had a departing value, listed
    # ... and was silent where it has no effect
    # (teacher_bn's one valid value with cached outputs is its reference there; a field refused where it has no effect
    # is never silent)
    refused = {field for n, field in REFUSED_WITHOUT_EFFECT if n == name}
    assert {field for field in CONTEXT if name in CONTEXT[field]} - {"teacher_bn"} - refused <= silent


def test_selecting_fields_are_only_modes():
    """Fields exempt from deviation reporting choose what runs; they are listed here so that a new one is a decision."""
    exempt = {
        (name, field)
        for name, method in METHODS.items()
        for field, info in method.config_class.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("selects")
    }
    assert exempt == {(name, "preset") for name in METHODS} | {
        ("mvmr", "mode"),
        ("bingo", "neighbour_backend"),  # backend: same bags
        ("mcl", "mode"),
        ("mcl", "cohort"),  # which cohort runs, in which of the two published settings
        ("lmcl", "mode"),
        ("lmcl", "cohort"),  # as MCL's: the official setting is supervised, label_free is ours
    }
    assert SELECTS == {"selects": True}
    assert all(issubclass(method.config_class, BaseModel) for method in METHODS.values())
