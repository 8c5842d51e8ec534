"""The CUDA paths: the same models, trainer and sampler on a GPU, checked against the CPU. Skipped without one."""
import pytest
import torch

from zoo import create_model, list_models
from zoo.generate import generate_ids
from zoo.models import RecurrentLM
from zoo.recipes import recipe_for
from zoo.train import Trainer, lm_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
NAMES = [name for name in list_models() if name != "ngram"]


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


@pytest.mark.parametrize("recipe, name", [("book", "lstm"), ("book", "gru-scratch"), ("modern", "lstm-scratch"),
                                          ("modern", "gru")])
def test_cuda_graph_steps_equal_eager_steps(corpus, recipe, name):
    """The captured step replays the eager one: same losses and weights after a few epochs, up to rounding;
    the modern recipe too (AdamW, a learning rate that changes every step, dropout, the moving average)."""
    results = []
    for graph in (False, True):
        torch.manual_seed(0)
        r = recipe_for(recipe, name, epochs=2, train_tokens=5000, cuda_graph=graph)
        model = create_model(name, num_hiddens=64, dropout=r.dropout, weight_drop=r.weight_drop)
        trainer = Trainer(model, corpus.splits, r, corpus.tokenizer, name, device="cuda")
        assert (trainer.run_step != trainer.train_step) == graph
        logs = list(trainer.run())
        results.append(([l.train_perplexity for l in logs], trainer.eval_model.state_dict()))
    (eager_ppl, eager), (graph_ppl, graphed) = results
    assert graph_ppl == pytest.approx(eager_ppl, rel=1e-4)
    for k in eager:
        torch.testing.assert_close(graphed[k], eager[k], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["gru-scratch", "deep-lstm", "lstm-peephole"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_the_graph_sampler_gives_the_loops_tokens(name, temperature):
    """Replaying the recorded step runs the same kernels as the loop: the same tokens, and again from the
    cached graph."""
    from zoo.generate import SAMPLERS
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=64, init="uniform").cuda().eval()
    prefix = torch.tensor([3, 1, 4, 1, 5], device="cuda")
    runs = [SAMPLERS[sampler](model, prefix, 80, temperature, 0, 0.9 if temperature else 1.0, 3,
                              torch.Generator("cuda").manual_seed(5)) for sampler in ("loop", "graph", "graph")]
    assert runs[0].shape == (3, 80) and torch.equal(runs[0], runs[1]) and torch.equal(runs[1], runs[2])


@pytest.mark.parametrize("name", ["gru-scratch", "lstm"])
@pytest.mark.parametrize("streams", [1, 3])
def test_scores_replayed_from_a_graph_are_the_cpus(name, streams, corpus):
    from zoo.evaluate import score
    torch.manual_seed(0)
    model = create_model(name, num_hiddens=64, init="uniform")
    ids = corpus.splits.train[:6_001]
    cpu = score(model, ids, streams=1)
    for _ in range(2):                                   # recorded, then replayed from the kept graph
        gpu = score(model.cuda(), ids, streams=streams)
        assert gpu.tokens == cpu.tokens and gpu.loss == pytest.approx(cpu.loss, rel=1e-3 if streams > 1 else 1e-5)
    model.cpu()
