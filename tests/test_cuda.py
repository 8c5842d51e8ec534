"""The CUDA paths: the same models, trainer and sampler on a GPU, checked against the CPU. Skipped without one."""
import pytest
import torch

from zoo import create_model
from zoo.generate import generate_ids
from zoo.models import RecurrentLM
from zoo.recipes import recipe_for
from zoo.train import Trainer, lm_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NAMES = ["rnn-scratch", "rnn", "gru-scratch", "gru", "lstm-scratch", "lstm", "deep-lstm-scratch", "deep-lstm"]


@pytest.mark.parametrize("name", NAMES)
def test_cuda_forward_and_gradients_match_the_cpu(name):
    torch.manual_seed(0)
    cpu = create_model(name, num_hiddens=32, init="uniform")
    gpu = create_model(name, num_hiddens=32, init="uniform").cuda()
    gpu.load_state_dict(cpu.state_dict())
    X, Y = torch.randint(0, 28, (4, 17)), torch.randint(0, 28, (4, 17))
    for model, x, y in ((cpu, X, Y), (gpu, X.cuda(), Y.cuda())):
        lm_loss(RecurrentLM.forward(model, x)[0], y).backward()
    torch.testing.assert_close(gpu(X.cuda())[0].cpu(), cpu(X)[0], atol=1e-4, rtol=1e-4)
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_on_cuda_lowers_the_loss(corpus, bf16):
    recipe = recipe_for("book", "lstm", epochs=3, train_tokens=5000, bf16=bf16)
    trainer = Trainer(create_model("lstm", num_hiddens=64), corpus.splits, recipe, corpus.tokenizer, "lstm",
                      device="cuda")
    logs = list(trainer.run())
    assert logs[-1].train_perplexity < logs[0].train_perplexity


def test_sampling_on_cuda_is_seeded():
    model = create_model("gru", num_hiddens=32).cuda()
    runs = [generate_ids(model, torch.tensor([3, 4]), 50, temperature=1.0, num_samples=2,
                         generator=torch.Generator("cuda").manual_seed(1)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 52)


def test_cuda_graph_steps_equal_eager_steps(corpus):
    """The captured step replays the eager one: same losses and weights after a few epochs, up to rounding."""
    results = []
    for graph in (False, True):
        torch.manual_seed(0)
        recipe = recipe_for("book", "lstm", epochs=2, train_tokens=5000, cuda_graph=graph)
        trainer = Trainer(create_model("lstm", num_hiddens=64), corpus.splits, recipe, corpus.tokenizer, "lstm",
                          device="cuda")
        logs = list(trainer.run())
        results.append(([l.train_perplexity for l in logs], trainer.model.state_dict()))
    (eager_ppl, eager), (graph_ppl, graphed) = results
    assert graph_ppl == pytest.approx(eager_ppl, rel=1e-4)
    for k in eager:
        torch.testing.assert_close(graphed[k], eager[k], atol=1e-4, rtol=1e-3)
