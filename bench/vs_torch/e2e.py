"""The reference-net training step of cases.json in each library, at each batch size."""
import numpy as np
import torch

import refnet  # bench/ is on sys.path: the drivers run from it

from .timing import HOST


def e2e_cases(cases, rng, dev=HOST):
    """One training step of the cases.json reference net (zero grads, forward, softmax cross-entropy,
    backward, Adam step) in each library, same weights, random 3x32x32 images, at each batch size.
    On the GPU: cnnkit's model.to("cuda") and torch eager; ModelToCudaMissing if cnnkit cannot move it."""
    import cnnkit as ck
    spec = cases["e2e"]
    C, H, W = spec["input"]
    K = spec["classes"]
    for batch in spec["batches"]:
        ck.manual_seed(0)
        model = refnet.cnnkit_net(ck, K)
        model.manual_seed(0)
        net = refnet.torch_net(torch, K)
        with torch.no_grad():
            for p_t, (_, p_c) in zip(net.parameters(), model.named_parameters()):
                assert tuple(p_t.shape) == p_c.shape  # torch's layouts: (K, C, R, S) and (out, in)
                p_t.copy_(torch.from_numpy(p_c.data))
        dev.move_models(model, net)  # before the optimizers: they build flat buffers over the parameters
        opt_c = ck.optim.Adam(model.parameters(), lr=1e-3)
        opt_t = torch.optim.Adam(net.parameters(), lr=1e-3)
        x = rng.standard_normal((batch, C, H, W), dtype=np.float32)
        y = rng.integers(0, K, batch).astype(np.int64)
        tx, ty = dev.th(x), dev.th(y)
        x, y = dev.ck(x), dev.ck(y)

        def ck_step():
            opt_c.zero_grad()
            loss, d = ck.losses.softmax_cross_entropy(model(x), y)
            model.backward(d)
            opt_c.step()
            return loss

        def th_step():
            opt_t.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(tx), ty)
            loss.backward()
            opt_t.step()
            return float(loss) if dev.name == "cpu" else loss  # on the GPU: no host sync inside the timing

        def check():  # before any step, both compute the same initial loss (dropout off: eval mode)
            model.eval()
            net.eval()
            a = float(ck.losses.softmax_cross_entropy(model(x), y)[0])
            with torch.no_grad():
                b = float(torch.nn.functional.cross_entropy(net(tx), ty))
            model.train()
            net.train()
            return abs(a - b) <= 1e-4 * max(1.0, abs(b))

        # rate = work / ms * 1e-6, so work = batch * 1e9 gives images per second
        yield (f"reference net, batch {batch}", "step", ("img/s", batch * 1e9), ck_step, th_step, check)
