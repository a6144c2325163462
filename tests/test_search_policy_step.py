"""Policy update strategies: the generalization objective's reward is the first-order change of the
validation loss, computed at the classifier, and it survives a state round trip."""
import torch
from torch import nn

from augment.pair_policy import PairPolicy
from search.policy_step import AffinityStep, GeneralizationStep, ScoreFunctionStep, StepOutcome


class TinyNet(nn.Module):
    """A frozen random feature map, then the classifier the strategy watches."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh())
        self.classifier = nn.Linear(6, 3)
        self.probes = 0

    def forward(self, x, probe=False):
        self.probes += int(probe)
        return self.classifier(self.body(x))


def _step(val_every=1):
    policy = PairPolicy(["identity", "rotate"], update_rule="reinforce")
    return GeneralizationStep(policy, torch.optim.Adam(policy.policy_parameters(), lr=0.1), val_every)


def _classifier_grad(net, x, y, reduction):
    loss = nn.functional.cross_entropy(net(x), y, reduction=reduction)
    grads = torch.autograd.grad(loss, (net.classifier.weight, net.classifier.bias))
    return torch.cat([g.reshape(-1) for g in grads])


def test_reward_is_the_dot_product_of_each_samples_gradient_with_the_validation_gradient():
    torch.manual_seed(0)
    net, step = TinyNet(), _step()
    x, y = torch.randn(5, 1, 3, 4), torch.tensor([0, 1, 2, 0, 1])
    xv, yv = torch.randn(7, 1, 3, 4), torch.tensor([2, 2, 1, 0, 1, 0, 2])
    with step.watch(net):
        logits = net(x)
    outcome = StepOutcome(torch.zeros(5), logits.detach(), y, lambda: (xv, yv), net)
    reward = step.reward(outcome)
    val_grad = _classifier_grad(net, xv, yv, "mean")
    expected = torch.stack([_classifier_grad(net, x[i:i + 1], y[i:i + 1], "sum") @ val_grad for i in range(5)])
    torch.testing.assert_close(reward, expected, rtol=1e-5, atol=1e-6)
    assert net.probes == 1  # the validation pass is a probe forward
    # A sample whose gradient points along the validation gradient lowers the validation loss most.
    lr = 1e-3
    best, worst = int(reward.argmax()), int(reward.argmin())
    losses = []
    for i in (best, worst):
        trial = TinyNet()
        trial.load_state_dict(net.state_dict())
        g = torch.autograd.grad(nn.functional.cross_entropy(trial(x[i:i + 1]), y[i:i + 1]),
                                (trial.classifier.weight, trial.classifier.bias))
        with torch.no_grad():
            trial.classifier.weight -= lr * g[0]
            trial.classifier.bias -= lr * g[1]
            losses.append(float(nn.functional.cross_entropy(trial(xv), yv)))
    assert losses[0] < losses[1]


def test_validation_gradient_is_refreshed_every_val_every_steps_and_kept_in_the_state():
    torch.manual_seed(1)
    net, step = TinyNet(), _step(val_every=3)
    x, y = torch.randn(4, 1, 3, 4), torch.tensor([0, 1, 2, 0])
    batches = iter([(torch.randn(4, 1, 3, 4), torch.tensor([1, 1, 0, 2])) for _ in range(3)])
    for _ in range(4):
        with step.watch(net):
            logits = net(x)
        step.update(StepOutcome(torch.rand(4), logits.detach(), y, lambda: next(batches), net),
                    {"pairs": torch.zeros(4, 2, dtype=torch.long)})
    assert net.probes == 2  # steps 0 and 3
    restored = _step(val_every=3)
    restored.load_state_dict(step.state_dict())
    assert restored.calls == 4
    torch.testing.assert_close(restored.val_gradient[0], step.val_gradient[0])
    assert not net.classifier._forward_pre_hooks  # watching leaves no hook behind


def test_adversarial_reward_is_the_training_loss():
    policy = PairPolicy(["identity", "rotate"], update_rule="reinforce")
    step = ScoreFunctionStep(policy, torch.optim.Adam(policy.policy_parameters()))
    loss = torch.tensor([0.5, 2.0])
    assert step.reward(StepOutcome(loss, torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), None, None)) is loss


def test_affinity_moves_the_policy_towards_the_pairs_with_low_training_loss():
    torch.manual_seed(0)
    policy = PairPolicy(["identity", "rotate", "equalize"], update_rule="reinforce")
    step = AffinityStep(policy, torch.optim.Adam(policy.policy_parameters(), lr=0.02))
    cost = torch.tensor([0.0, 0.3, 1.0])  # the loss an op adds: equalize destroys the most
    for _ in range(300):
        pairs = torch.multinomial(policy.probabilities().detach().reshape(-1), 32, replacement=True)
        pairs = torch.stack((pairs // 3, pairs % 3), dim=1)
        loss = 1.0 + cost[pairs].sum(1) + torch.randn(32)
        step.update(StepOutcome(loss, torch.zeros(32, 3), torch.zeros(32, dtype=torch.long), None, None),
                    {"pairs": pairs})
    p = policy.probabilities().detach()
    marginal = 0.5 * (p.sum(0) + p.sum(1))
    assert marginal[0] > 1 / 3 + 0.05 and marginal[2] < 1 / 3 - 0.05, marginal
    assert marginal[0] > marginal[1] > marginal[2]
    assert float(policy.entropy()) >= policy.entropy_floor - 0.05  # the floor keeps it diverse


def test_the_hypergradient_pass_supplies_the_validation_gradient_without_a_probe():
    from hpo.hypergrad import HyperGradient
    from hpo.weight_update import HyperUpdate, WeightUpdate

    torch.manual_seed(0)
    net, step = TinyNet(), _step(val_every=1)
    xv, yv = torch.randn(7, 1, 3, 4), torch.tensor([2, 2, 1, 0, 1, 0, 2])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    hyper = HyperGradient(lr_bounds=(0.01, 0.2), wd_bounds=(1e-4, 1e-3), h_lr=1e-3)
    update = HyperUpdate(opt, hyper, lambda x: net(x, probe=False))
    step.take_val_grads_from(update, net)
    x, y = torch.randn(5, 1, 3, 4), torch.tensor([0, 1, 2, 0, 1])
    for i in range(3):
        with step.watch(net):
            logits = net(x)
        step.reward(StepOutcome(torch.zeros(5), logits.detach(), y, lambda: (xv, yv), net))
        if i > 0:  # from the pass of the step before: at these very weights, the validation gradient
            torch.testing.assert_close(torch.cat([g.reshape(-1) for g in step.val_gradient]),
                                       _classifier_grad(net, xv, yv, "mean"), rtol=1e-5, atol=1e-7)
        opt.zero_grad()
        nn.functional.cross_entropy(logits, y).backward()
        update.step(i, lambda: (xv, yv))
    assert net.probes == 1  # only the first step, before any pass, probed
    assert step.take_val_grads_from(WeightUpdate(opt), net) is None and step.shared is None
