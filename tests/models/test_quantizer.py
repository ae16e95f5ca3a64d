import torch

from spectro_fx.models.quantizer import VectorQuantizer


def test_first_batch_initialises_codebook_from_batch_vectors():
    vq = VectorQuantizer(8, 4)
    z = torch.randn(100, 4)
    assert not bool(vq.initted)
    vq.init_from_batch_(z)
    for row in vq.codebook:
        assert (z == row).all(dim=1).any()
    assert bool(vq.initted)
    # a second call is a no-op
    before = vq.codebook.clone()
    vq.init_from_batch_(torch.randn(100, 4))
    assert torch.equal(vq.codebook, before)


def test_ema_update_matches_equation_5():
    gamma = 0.9
    vq = VectorQuantizer(3, 2, decay=gamma, restart_threshold=0.0, epsilon=0.0)
    vq.initted.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 5.0]]))
    vq.embed_avg.copy_(vq.codebook * 2.0)
    vq.cluster_size.copy_(torch.tensor([2.0, 2.0, 2.0]))
    z = torch.tensor([[0.5, 0.0], [-0.5, 1.0], [9.0, 9.0]])
    vq.train()(z)
    # cluster 0 gets the first two vectors, cluster 1 the third, cluster 2 none
    n = torch.tensor([2.0, 1.0, 0.0])
    sums = torch.tensor([[0.0, 1.0], [9.0, 9.0], [0.0, 0.0]])
    big_n = gamma * 2.0 + (1 - gamma) * n
    m = gamma * torch.tensor([[0.0, 0.0], [20.0, 20.0], [-20.0, 10.0]]) + (1 - gamma) * sums
    torch.testing.assert_close(vq.cluster_size, big_n)
    torch.testing.assert_close(vq.codebook, m / big_n[:, None])


def test_unused_code_is_restarted_from_batch_vector():
    vq = VectorQuantizer(4, 2, decay=0.5, restart_threshold=0.2)
    vq.initted.fill_(True)
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 100.0], [-1.0, 1.0]]))
    vq.embed_avg.copy_(vq.codebook)
    vq.cluster_size.fill_(1.0)
    z = torch.randn(64, 2) * 0.1
    vq.train()
    for _ in range(4):
        vq(z)
    # code 2 is never nearest: its usage decays 1 -> 0.5 -> 0.25 -> 0.125 and it restarts
    assert int(vq.restarts) >= 1
    assert torch.cdist(vq.codebook[2:3], z).min() < 1.0


def test_straight_through_gradient_reaches_input():
    vq = VectorQuantizer(8, 4)
    z = torch.randn(32, 4, requires_grad=True)
    q = vq.train()(z)
    (q.latent.sum() + q.commitment_loss).backward()
    assert z.grad is not None and torch.all(torch.isfinite(z.grad)) and z.grad.abs().sum() > 0


def test_codebook_buffers_carry_no_autograd_history():
    vq = VectorQuantizer(8, 4)
    lin = torch.nn.Linear(4, 4)
    for _ in range(3):
        vq.train()(lin(torch.randn(16, 4)))
    for name in ("codebook", "embed_avg", "cluster_size"):
        buf = getattr(vq, name)
        assert not buf.requires_grad and buf.grad_fn is None, name


def test_eval_mode_leaves_codebook_alone():
    vq = VectorQuantizer(8, 4)
    vq.train()(torch.randn(16, 4))
    before = vq.codebook.clone()
    vq.eval()(torch.randn(16, 4) * 5)
    torch.testing.assert_close(vq.codebook, before)


def test_nearest_code_is_the_brute_force_nearest_and_the_first_of_equal_ones():
    from spectro_fx.models.quantizer import nearest_code

    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(1024, 32, generator=gen)
    z = codebook[torch.randint(0, 1024, (500,), generator=gen)] + 0.5 * torch.randn(500, 32, generator=gen)
    z = torch.cat([z, 3.0 * torch.randn(200, 32, generator=gen)])  # far from every code too
    brute = ((z[:, None, :].double() - codebook[None].double()) ** 2).sum(-1).argmin(1)
    assert torch.equal(nearest_code(z, codebook), brute)
    assert torch.equal(nearest_code(z, codebook, codebook.pow(2).sum(1)), brute)
    # a duplicated codeword: the lower index wins, as argmin would pick
    doubled = torch.cat([codebook[:8], codebook[:8]])
    assert nearest_code(codebook[:8], doubled).tolist() == list(range(8))


def test_the_grouped_minimum_is_torchs_first_minimum_with_many_ties():
    """Distances with few distinct values (ties within and across groups of 32, a row's
    minimum in its last group, NaN-free): the same index as torch.min, block by block."""
    from spectro_fx.models.quantizer import _first_min, nearest_code

    gen = torch.Generator().manual_seed(3)
    distance = torch.randint(1, 4, (600, 1024), generator=gen).float()
    distance[0, -1] = 0.0  # the only minimum, in the last group
    distance[1, 31::32] = 0.0  # one at the end of every group: the first group's wins
    assert torch.equal(_first_min(distance), torch.min(distance, dim=1)[1])
    assert _first_min(distance)[:2].tolist() == [1023, 31]
    # through the row blocks of nearest_code: a codebook of repeated words
    codebook = torch.randn(32, 8, generator=gen).repeat(32, 1)  # 1,024 codes, each word 32 times
    z = codebook[torch.randint(0, 1024, (700,), generator=gen)]
    assert torch.equal(nearest_code(z, codebook), (nearest_code(z, codebook[:32])))
