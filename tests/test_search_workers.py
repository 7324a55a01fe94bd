"""The CPU search's worker threads (vcq_plugin._search_workers): same indices as the one-thread loop
and the reference, the caller and single-threaded workers sharing the units, the caller's thread count
restored (also on error), a fresh pool in a forked child, errors raised in the caller."""
import multiprocessing
import threading

import pytest
import torch

from vcq_plugin import _search_workers, prefix_search
from vcq_plugin._search_workers import Once, Turns, search_workers
from vcq_plugin.prefix_search import segment_argmin, tiled_prefix_argmin
from vcq_plugin.schedule import CodebookSchedule

needs_openmp = pytest.mark.skipif(not _search_workers._openmp_backend(), reason="worker threads need ATen's OpenMP backend")


@pytest.fixture
def threads():
    """Run with the given torch thread count, restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _problem(seed: int, k_max: int = 300, seq_len: int = 24, batch: int = 5, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    sizes = tuple(CodebookSchedule("cosine", k_min=2, k_max=k_max, seq_len=seq_len).sizes.tolist())
    z = torch.randint(-2, 3, (batch, seq_len, dim), generator=g).float()  # exact distances, many ties
    codebook = torch.randint(-2, 3, (k_max, dim), generator=g).float()
    return z, codebook, sizes


@needs_openmp
@pytest.mark.parametrize("n_threads", [2, 3])
@pytest.mark.parametrize("chunk", [64, 1000, 10**6])  # row blocks, several tiles per group, one tile
def test_workers_give_the_one_thread_indices(threads, monkeypatch, n_threads, chunk):
    z, codebook, sizes = _problem(seed=chunk + n_threads)
    want = segment_argmin(z, codebook, sizes)
    threads(n_threads)
    used = []
    real = prefix_search._compute_tiles
    monkeypatch.setattr(prefix_search, "_compute_tiles", lambda *a: (used.append(threading.current_thread().name), real(*a))[1])
    assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, chunk), want)
    if len(prefix_search._loop_layout(sizes, z.shape[0], chunk).units) > 1:  # the caller and n - 1 workers share them
        caller = threading.current_thread().name
        assert used.count(caller) == 1 and len(used) == n_threads
        assert all(name.startswith("vcq-search") for name in used if name != caller)
        assert torch.get_num_threads() == n_threads  # the caller's count, back after its share
    else:  # a single unit: nothing to share, the caller computes it
        assert used == [threading.current_thread().name]
    used.clear()
    monkeypatch.setattr(_search_workers, "_OFF", True)  # VCQ_SEARCH_WORKERS=0
    assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, chunk), want)
    assert used == [threading.current_thread().name]
    used.clear()
    monkeypatch.setattr(_search_workers, "_OFF", False)
    threads(1)  # one thread: no workers
    assert torch.equal(tiled_prefix_argmin(z, codebook, sizes, chunk), want)
    assert used == [threading.current_thread().name]


@needs_openmp
def test_workers_are_single_threaded_and_leave_the_callers_count(threads):
    threads(2)
    pool = search_workers(torch.device("cpu"), units=2)
    assert pool is not None and pool.size == 1  # the caller is the other thread
    assert [pool.submit(torch.get_num_threads).result() for _ in range(4)] == [1, 1, 1, 1]
    assert torch.get_num_threads() == 2
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))  # ATen's default for new threads
    t.start()
    t.join()
    assert seen == [2]
    threads(3)  # a new thread count: a new pool for it
    assert search_workers(torch.device("cpu"), units=2).size == 2
    assert search_workers(torch.device("cpu"), units=1) is None  # one unit: the caller computes it
    assert search_workers(torch.device("meta"), units=8) is None  # not CPU


def _search_in_child(queue):
    z, codebook, sizes = _problem(seed=7)
    torch.set_num_threads(2)
    queue.put(tiled_prefix_argmin(z, codebook, sizes, 64).tolist())


@needs_openmp
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_a_forked_child_gets_its_own_workers(threads):
    """A child forked after the pool exists has the pool object but not its threads: it must not wait
    on them (a DataLoader worker tokenising, for instance), it makes its own."""
    threads(2)
    z, codebook, sizes = _problem(seed=7)
    want = tiled_prefix_argmin(z, codebook, sizes, 64)  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_search_in_child, args=(queue,))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0 and got == want.tolist()


@needs_openmp
def test_an_error_in_a_worker_reaches_the_caller(threads, monkeypatch):
    threads(2)
    z, codebook, sizes = _problem(seed=3)

    def broken(*_):
        raise RuntimeError("tile failed")

    monkeypatch.setattr(prefix_search, "_compute_tiles", broken)
    with pytest.raises(RuntimeError, match="tile failed"):
        tiled_prefix_argmin(z, codebook, sizes, 64)
    assert torch.get_num_threads() == 2  # the caller's count restored although its share raised


@needs_openmp
def test_an_error_in_a_worker_alone_reaches_the_caller(threads, monkeypatch):
    threads(2)
    z, codebook, sizes = _problem(seed=4)
    caller, real = threading.current_thread().name, prefix_search._compute_tiles

    def broken_in_workers(*a):
        if threading.current_thread().name != caller:
            raise RuntimeError("worker tile failed")
        return real(*a)

    monkeypatch.setattr(prefix_search, "_compute_tiles", broken_in_workers)
    with pytest.raises(RuntimeError, match="worker tile failed"):
        tiled_prefix_argmin(z, codebook, sizes, 64)
    assert torch.get_num_threads() == 2


def test_turns_hand_each_item_to_one_thread_and_once_computes_once():
    turns, calls = Turns(range(2000)), []
    once = Once(lambda: calls.append(1) or "value")
    taken: list[list[int]] = [[] for _ in range(4)]

    def consume(i):
        assert once.get() == "value"
        taken[i].extend(turns)

    workers = [threading.Thread(target=consume, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(x for part in taken for x in part) == list(range(2000))
    assert all(part == sorted(part) for part in taken)  # in order within each thread
    assert calls == [1]
