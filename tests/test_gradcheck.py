# ck.gradcheck itself: it passes correct layers (including a custom one, the documented way to write
# a layer), fails a wrong one with a message naming the layer, the parameter and the worst error,
# treats kinks (ReLU at 0, max-pool ties) as kinks rather than failures, samples large tensors and
# leaves the caller's model untouched.
import numpy as np
import pytest

import cnnkit as ck


class Scale(ck.Layer):
    """A custom layer: y = x * gamma[c] + beta[c], per channel (the example from cnnkit.layer's docstring)."""

    def __init__(self, channels, bug=False, name=None):
        super().__init__(name=name)
        self.channels, self.bug = channels, bug
        self.add_parameter("gamma", np.linspace(0.5, 1.5, channels).astype(np.float32))
        self.add_parameter("beta", np.zeros(channels, np.float32))

    def output_shape(self, x):
        if len(x) != 4 or x[1] != self.channels:
            raise ValueError(f"Scale: expects (N, {self.channels}, H, W), got shape {tuple(x)}")
        return tuple(x)

    def forward(self, x):
        self.output_shape(x.shape)
        self._cache = x
        return x * self.gamma.data[:, None, None] + self.beta.data[:, None, None]

    def backward(self, dy, need_dx=True):
        x = self._need_cache()
        if self.gamma.requires_grad:
            g = (dy * x).sum(axis=(0, 2, 3))
            self.gamma.grad += 1.01 * g if self.bug else g       # the bug: 1% off
        if self.beta.requires_grad:
            self.beta.grad += dy.sum(axis=(0, 2, 3))
        return dy * self.gamma.data[:, None, None] if need_dx else None

    def config(self):
        return {"channels": self.channels, "bug": self.bug}


def rnd(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_custom_layer_passes_alone_and_in_a_model():
    report = ck.gradcheck(Scale(3), rnd(2, 3, 4, 4))
    assert report.ok and [r["name"] for r in report.rows] == ["input", "gamma", "beta"]
    assert all(r["max_rel_err"] < 1e-7 for r in report.rows)
    model = ck.Sequential(ck.Conv2d(2, 3, 3, seed=0), Scale(3, name="scale"), ck.ReLU(), ck.Flatten(), ck.Linear(12, 2, seed=1))
    report = ck.gradcheck(model, rnd(2, 2, 4, 4), np.array([0, 1]))        # labels: softmax cross-entropy
    assert report.ok and report["scale.gamma"]["checked"] == 3
    assert "scale.gamma" in str(report) and "PASS" in str(report)


def test_wrong_gradient_fails_naming_layer_parameter_and_error():
    model = ck.Sequential(ck.Conv2d(2, 3, 3, seed=0), Scale(3, bug=True, name="scale"), ck.Flatten(), ck.Linear(12, 2, seed=1))
    with pytest.raises(ck.GradcheckError, match=r"layer 'scale' Scale, parameter 'gamma' \(scale.gamma\): worst "
                                                r"relative error 9\.90\de-03 at index \(\d,\)") as e:
        ck.gradcheck(model, rnd(2, 2, 4, 4))
    assert "Failing tensors: ['scale.gamma']" in str(e.value)
    report = ck.gradcheck(Scale(3, bug=True), rnd(2, 3, 2, 2), raise_on_fail=False)
    assert not report.ok and report["gamma"]["failures"] == 3 and report["beta"]["failures"] == 0


def test_relu_kinks_are_not_failures():
    x = rnd(4, 8)
    x[0, :4] = 0.0                 # exactly on the kink
    x[1, :4] = 3e-7                # within eps of it
    report = ck.gradcheck(ck.ReLU(), x, max_coords=64)
    assert report.ok and report.kinks == 8
    # a wrong dout (2 for f = sum(out)) makes every coordinate wrong. The 8 points on or within eps of the
    # kink are kinks here too, as in the correct case above (their numeric gradient straddles the kink and
    # says nothing); the 24 away from it fail, so the wrong gradient is caught.
    bad = ck.gradcheck(ck.LeakyReLU(0.5), x, loss=lambda out, y: (float(out.sum()), np.full(out.shape, 2.0)),
                       raise_on_fail=False, max_coords=64)
    assert bad["input"]["failures"] == 24 and bad["input"]["kinks"] == 8 and not bad.ok


def test_maxpool_ties_are_kinks():
    x = rnd(1, 1, 4, 4)
    x[0, 0, 0, :2] = 1.5           # a tie inside the first window
    x[0, 0, 2:, 2:] = -0.25        # a four-way tie
    report = ck.gradcheck(ck.MaxPool2d(2), x)
    assert report.ok and report.kinks >= 2


def test_sampling_large_tensors_and_caller_untouched():
    model = ck.Sequential(ck.Linear(300, 40, seed=0), ck.Dropout(0.5), ck.BatchNorm1d(40), ck.Linear(40, 3, seed=1))
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    offsets = model.rng_state()
    report = ck.gradcheck(model, rnd(5, 300), max_coords=10, seed=1)
    assert report.ok
    assert report["0.weight"]["checked"] == 10 and report["3.bias"]["checked"] == 3
    assert report["input"]["checked"] == 10
    assert all(np.array_equal(before[n], p.data) and p.data.dtype == np.float32 for n, p in model.named_parameters())
    assert model.rng_state() == offsets and int(model[2].num_batches_tracked) == 0


def test_frozen_parameters_are_not_checked():
    model = ck.Sequential(ck.Linear(4, 3, seed=0), ck.ReLU(), ck.Linear(3, 2, seed=1))
    model[0].weight.requires_grad = False
    report = ck.gradcheck(model, rnd(3, 4))
    assert [r["name"] for r in report.rows] == ["input", "0.bias", "2.weight", "2.bias"]


def test_gradcheck_bad_argument():
    with pytest.raises(TypeError, match="expected a ck.Layer or model, got function"):
        ck.gradcheck(lambda x: x, rnd(2, 2))


def test_kinks_of_several_units_at_one_point_are_not_failures():
    # A zero image patch with a zero bias puts several ReLU pre-activations exactly at 0: +eps on one input
    # pixel wakes the units with positive weights, -eps those with negative ones, and both one-sided slopes
    # can have the same sign. That is still a kink, not a wrong gradient; a wrong one is still caught.
    # Real digits have such patches (the README's example, which counted a failure before this check).
    digits = ck.data.load_digits()["train"]
    x, y = digits.x[:4], digits.y[:4]
    ck.manual_seed(0)
    model = ck.Sequential(ck.Conv2d(1, 16, 3, padding=1), ck.ReLU(), ck.MaxPool2d(2), ck.Flatten(),
                          ck.Linear(16 * 4 * 4, 10))
    rep = ck.gradcheck(model, x, y)
    assert rep.ok and rep["input"]["kinks"] > 0, str(rep)

    class Doubled(ck.ReLU):
        def backward(self, dy, need_dx=True):
            return 2 * super().backward(dy, need_dx)
    ck.manual_seed(0)
    broken = ck.Sequential(ck.Conv2d(1, 16, 3, padding=1), Doubled(), ck.MaxPool2d(2), ck.Flatten(),
                           ck.Linear(16 * 4 * 4, 10))
    with pytest.raises(ck.GradcheckError, match=r"Failing tensors: \[.*'0\.weight'"):
        ck.gradcheck(broken, x, y)


@pytest.mark.parametrize("kw, exc, message", [
    (dict(eps=0), ValueError, r"gradcheck: eps must be > 0, got 0"),
    (dict(eps=-1e-5), ValueError, r"gradcheck: eps must be > 0, got -1e-05"),
    (dict(rtol=-1), ValueError, r"gradcheck: rtol must be > 0, got -1"),
    (dict(atol=-1), ValueError, r"gradcheck: atol must be >= 0, got -1"),
    (dict(atol="0"), TypeError, r"gradcheck: atol must be a number, got str"),
    (dict(eps=float("nan")), ValueError, r"gradcheck: eps must be finite, got nan"),
])
def test_gradcheck_tolerances_are_checked(kw, exc, message):
    with pytest.raises(exc, match=message):
        ck.gradcheck(ck.Linear(3, 2), np.zeros((2, 3)), **kw)


class ZeroGrad(ck.Layer):
    """y = 2x with a backward that returns zeros: wrong everywhere, and NaN-blind if NaN counted as a match."""

    def forward(self, x):
        self._cache = True
        return 2 * x

    def backward(self, dy, need_dx=True):
        self._need_cache()
        return np.zeros_like(dy)


def test_a_nan_in_the_comparison_is_a_failure():
    x = rnd(2, 3)
    x[0, 1] = np.nan                   # the loss and every numeric slope are NaN; the analytic one is 0
    with pytest.raises(ck.GradcheckError, match=r"layer \(input\), parameter 'input' \(input\): worst "
                                                r"relative error nan .*analytic 0\.0+e\+00, numeric nan.*"
                                                r"6 of 6 checked coordinates failed.*the loss is NaN"):
        ck.gradcheck(ZeroGrad(), x)
    rep = ck.gradcheck(ZeroGrad(), x, raise_on_fail=False)
    assert not rep.ok and rep["input"]["failures"] == 6 and np.isnan(rep["input"]["max_rel_err"])
    assert "FAIL" in str(rep)

    class NanGrad(ck.ReLU):            # a correct function whose analytic gradient holds a NaN
        def backward(self, dy, need_dx=True):
            dx = super().backward(dy, need_dx)
            dx[0, 0] = np.nan
            return dx
    rep = ck.gradcheck(NanGrad(), np.abs(rnd(2, 3)) + 0.5, raise_on_fail=False)
    assert not rep.ok and rep["input"]["failures"] == 1 and np.isnan(rep["input"]["max_rel_err"])
    assert rep["input"]["worst"][0] == (0, 0)


@pytest.mark.parametrize("kw, exc, message", [
    (dict(max_coords=0), ValueError, r"gradcheck: max_coords must be >= 1, got 0"),
    (dict(max_coords=-3), ValueError, r"gradcheck: max_coords must be >= 1, got -3"),
    (dict(max_coords=2.5), TypeError, r"gradcheck: max_coords must be an int, got float"),
    (dict(max_coords=True), TypeError, r"gradcheck: max_coords must be an int, got bool"),
    (dict(seed="0"), TypeError, r"gradcheck: seed must be an int, got str"),
    (dict(seed=-1), ValueError, r"gradcheck: seed must be >= 0, got -1"),
    (dict(seed=None), TypeError, r"gradcheck: seed must be an int, got NoneType"),
    (dict(loss="mse"), TypeError, r"gradcheck: loss must be a callable loss\(out, y\) -> \(value, dout\), got str"),
    (dict(loss=lambda out, y: 1.0), TypeError, r"gradcheck: loss must return \(value, dout\), got float"),
    (dict(loss=lambda out, y: (1.0, np.zeros(3))), ValueError,
     r"gradcheck: loss returned dout of shape \(3,\); expected the output's shape \(2, 2\)"),
    (dict(rtol=0), ValueError, r"gradcheck: rtol must be > 0, got 0"),
    (dict(check_input="no"), TypeError, r"gradcheck: check_input must be a bool, got str"),
    (dict(raise_on_fail=1), TypeError, r"gradcheck: raise_on_fail must be a bool, got int"),
])
def test_gradcheck_bad_arguments_name_themselves(kw, exc, message):
    with pytest.raises(exc, match=message):
        ck.gradcheck(ck.Linear(3, 2), rnd(2, 3), **kw)


def test_nothing_to_check_is_an_error_not_a_pass():
    layer = ck.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match=r"gradcheck: nothing to check: check_input is False and no parameter "
                                         r"of Linear requires grad"):
        ck.gradcheck(layer, rnd(2, 3), check_input=False)
    assert ck.gradcheck(ck.Linear(3, 2), rnd(2, 3), max_coords=1, seed=np.int64(4)).rows[0]["checked"] == 1
