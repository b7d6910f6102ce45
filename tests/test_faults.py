"""Faults of the machine and of the run that each script must survive with one clear line, and the
in-process checks that catch faults a run's logs would hide (V(final obs), resuming mid-run)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import tyro

from tests.conftest import REPO, TINY, assert_identical, run_script, train_in
from tests.envs import COUNTING_TIME_LIMIT, counting_episodes
from tests.test_long_runs import SCRIPTS, module, script, start  # noqa: F401 (script: the fixture)

ONE_MINIBATCH = ["--num-minibatches", "1", "--update-epochs", "1"]


def in_python(cwd, code: str, script: str, *flags: str) -> subprocess.CompletedProcess:
    """Run `code` (which patches something), then the script as __main__ with `flags`, from `cwd`."""
    runner = f"{code}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", runner, str(REPO / script), *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]  # after ale-py's banner


INF_AFTER_THE_STEP = """
import torch
step = torch.optim.Adam.step
def step_then_blow_up(self, *args, **kwargs):  # the update's last step leaves an infinite weight behind
    loss = step(self, *args, **kwargs)
    with torch.no_grad():
        self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
    return loss
torch.optim.Adam.step = step_then_blow_up
"""


def test_weights_blown_up_by_the_last_update_are_never_saved(tmp_path, script):
    flags = ["--total-timesteps", "128", "--num-envs", "1", "--num-steps", "128", *ONE_MINIBATCH, "--save-model"]
    run = in_python(tmp_path, INF_AFTER_THE_STEP, script, *SCRIPTS[script], *flags)
    assert run.returncode == 1, run.stderr
    line = one_line(run.stderr)
    assert line.startswith(f"{script}: stopped: iteration 1: model/") and "is not finite" in line, line
    assert "(last good checkpoint: none)" in line, line
    assert not glob.glob(str(tmp_path / "runs" / "**" / "*.pt*"), recursive=True)
    assert "evaluation of" not in run.stdout


def test_rotation_keeps_what_this_process_wrote_last(tmp_path, script):
    # an earlier process's checkpoints, newer by iteration, and a write it left half-done
    first = train_in(tmp_path, script, *SCRIPTS[script], *TINY, "--checkpoint-every", "1", "--keep-checkpoints", "8")
    folder = f"{first.run_dir}/checkpoints"
    open(f"{folder}/iteration_0000099.pt.tmp", "wb").write(b"partial")
    resume = f"{folder}/iteration_0000002.pt"  # resumed from an older one: lower numbers than the files there
    flags = [*SCRIPTS[script], *TINY, "--checkpoint-every", "1", "--keep-checkpoints", "2", "--resume", resume]
    assert run_script(script, *flags, "--total-timesteps", "640", cwd=tmp_path).returncode == 0
    assert sorted(os.listdir(folder)) == ["iteration_0000004.pt", "iteration_0000005.pt"]


FROZEN_CLOCK = "import itertools, time\nticks = itertools.count()\ntime.time = lambda: 1.7e9 + next(ticks) * 1e-6"


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    flags = [*TINY, "--total-timesteps", "128", "--checkpoint-every", "1"]
    first = in_python(tmp_path, FROZEN_CLOCK, "ppo_discrete.py", *flags)
    assert first.returncode == 0, first.stderr
    (checkpoint,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))
    before = open(checkpoint, "rb").read()
    second = in_python(tmp_path, FROZEN_CLOCK, "ppo_discrete.py", *flags)
    assert second.returncode == 0, second.stderr
    names = sorted(os.path.basename(path) for path in glob.glob(str(tmp_path / "runs" / "*")))
    assert names == ["CartPole-v1__ppo_discrete__1__1700000000", "CartPole-v1__ppo_discrete__1__1700000000_2"]
    assert open(checkpoint, "rb").read() == before, "the second run overwrote the first's checkpoint"


DISK_FULL_AT_SECOND_CHECKPOINT = """
import errno, os, torch
save, calls = torch.save, []
def save_to_full_disk(obj, path, *args, **kwargs):
    calls.append(path)
    if len(calls) == 2:  # a few bytes of the second checkpoint, then the disk is full
        open(path, "wb").write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return save(obj, path, *args, **kwargs)
torch.save = save_to_full_disk
"""


def test_a_full_disk_stops_the_run_naming_the_last_good_checkpoint(tmp_path, script):
    proc = in_python(
        tmp_path, DISK_FULL_AT_SECOND_CHECKPOINT, script, *SCRIPTS[script], *TINY, "--checkpoint-every", "2"
    )
    assert proc.returncode == 1, proc.stderr
    (good,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*"))  # no .tmp left, the older one kept
    good = os.path.relpath(good, tmp_path)
    line = one_line(proc.stderr)
    assert line == (
        f"{script}: stopped: cannot write {good.replace('0000002', '0000004')}: No space left on device "
        f"(last good checkpoint: {good})"
    )
    assert module(script).load_checkpoint(str(tmp_path / good), "--resume")["iteration"] == 2


def unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_read_only(cwd, script: str, *flags: str) -> subprocess.CompletedProcess:
    """The script run from `cwd` mounted read-only (a private mount namespace: root cannot write there either)."""
    mount = 'mount --bind -o ro "$0" "$0" && cd "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, str(cwd), sys.executable, str(REPO / script), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.mark.skipif(not unshare_works(), reason="needs `unshare -rm` for a read-only mount")
def test_a_read_only_working_directory_is_one_line(tmp_path, script):
    trained = train_in(
        tmp_path,
        script,
        *SCRIPTS[script],
        *TINY,
        "--total-timesteps",
        "128",
        "--checkpoint-every",
        "1",
        "--save-model",
        "--eval-episodes",
        "1",
    )
    (checkpoint,) = glob.glob(f"{trained.run_dir}/checkpoints/*.pt")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    resumed = f"{script}: stopped: cannot write runs: Read-only file system (last good checkpoint: {checkpoint})"
    for flags, line in [([], f"{script}: error: runs: Read-only file system"), (["--resume", checkpoint], resumed)]:
        proc = run_read_only(read_only, script, *SCRIPTS[script], *TINY, *flags)
        assert proc.returncode == 1 and one_line(proc.stderr) == line, proc.stderr
    # an evaluation writes nothing: it works there
    model = f"{trained.run_dir}/{script[:-3]}.pt"
    proc = run_read_only(read_only, script, "--eval-checkpoint", model, "--eval-episodes", "1")
    assert proc.returncode == 0 and "over 1 episodes" in proc.stdout, proc.stderr
    assert os.listdir(read_only) == []


def stop_quickly(proc: subprocess.Popen, signum: int) -> tuple[str, str, float]:
    """Send `signum` -> stdout, stderr and the seconds the process took to exit."""
    sent = time.time()
    proc.send_signal(signum)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()  # a run that ignores the signal must not outlive the test
        raise
    return stdout, stderr, time.time() - sent


def test_a_signal_stops_the_evaluation_after_training_at_once(tmp_path, script):
    proc = start(tmp_path, script, *TINY, "--save-model", "--eval-episodes", "100000")
    for line in proc.stdout:  # training is over once the model is saved
        if line.startswith("model saved to"):
            break
    time.sleep(1)
    stdout, stderr, seconds = stop_quickly(proc, signal.SIGINT)
    assert proc.returncode == 130 and seconds < 5, (proc.returncode, seconds, stderr)
    assert one_line(stderr) == f"{script}: SIGINT: stopped"  # the model is saved: "model saved to" said where
    assert "evaluation of" not in stdout
    (model,) = glob.glob(str(tmp_path / "runs" / "*" / f"{script[:-3]}.pt"))
    assert module(script).load_checkpoint(model, "--eval-checkpoint")["global_step"] == 1024


def test_a_signal_stops_a_periodic_evaluation_at_once(tmp_path, script):
    # as the evaluation after training: the iteration's checkpoint is written before it, so nothing is lost
    proc = start(tmp_path, script, *TINY, "--eval-every", "2", "--eval-episodes", "100000")
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "iteration_0000002.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.1)
    time.sleep(1)
    stdout, stderr, seconds = stop_quickly(proc, signal.SIGINT)
    assert proc.returncode == 130 and seconds < 5, (proc.returncode, seconds, stderr)
    assert one_line(stderr) == f"{script}: SIGINT: stopped" and "evaluation of" not in stdout
    (summary,) = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))
    summary = json.loads(open(summary).read())
    assert summary["ended"] == "signal SIGINT" and summary["last_checkpoint"].endswith("iteration_0000002.pt")


SLOW_FRAMES = {  # tests.envs:SlowFrames-v0 around an env each script takes
    "ppo_discrete.py": ["--env-kwargs", "inner=CountingEnv-v0"],
    "ppo_continuous.py": ["--env-kwargs", "inner=CountingBox-v0"],
    "ppo_atari.py": ["--env-kwargs", "inner=BrightOrDark-v0", "seconds=0.1", "--frame-skip", "1", "--frame-size", "36"],
}


@pytest.mark.parametrize(
    "script, vector_mode",
    [
        ("ppo_discrete.py", "sync"),
        ("ppo_discrete.py", "async"),
        ("ppo_continuous.py", "async"),
        ("ppo_atari.py", "sync"),
    ],
)
def test_a_signal_begins_no_new_recording(tmp_path, script, vector_mode):
    # frames that take 0.1-0.2 s each, as MuJoCo's on a CPU: the episode being recorded when the signal comes ends as
    # it would, but the rest of the iteration (episodes 8, 27, 64, ... of gymnasium's schedule) is not recorded
    flags = ["--env-id", "tests.envs:SlowFrames-v0", *SLOW_FRAMES[script], "--capture-video", "--num-envs", "1"]
    proc = start(
        tmp_path, script, *flags, "--num-steps", "2048", "--total-timesteps", "100000", "--vector-mode", vector_mode
    )
    deadline = time.time() + 120
    while not glob.glob(str(tmp_path / "videos" / "*" / "rl-video-episode-0.mp4")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    _, stderr, _ = stop_quickly(proc, signal.SIGTERM)
    assert proc.returncode == 143 and "continue with" in stderr, stderr
    videos = sorted(os.path.basename(path) for path in glob.glob(str(tmp_path / "videos" / "*" / "*.mp4")))
    assert videos in (["rl-video-episode-0.mp4"], ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]), videos


def test_a_signal_stops_eval_checkpoint_at_once(tmp_path, script):
    (tmp_path / "train").mkdir()
    trained = train_in(tmp_path / "train", script, *SCRIPTS[script], *TINY, "--save-model", "--eval-episodes", "1")
    cwd = tmp_path / "eval"
    cwd.mkdir()
    proc = start(cwd, script, "--eval-checkpoint", f"{trained.run_dir}/{script[:-3]}.pt", "--eval-episodes", "100000")
    for line in proc.stdout:
        if line.startswith("evaluating "):
            break
    time.sleep(1)
    _, stderr, seconds = stop_quickly(proc, signal.SIGTERM)
    assert proc.returncode == 143 and seconds < 5, (proc.returncode, seconds, stderr)
    assert one_line(stderr) == f"{script}: SIGTERM: stopped"


def test_any_box_shape_trains_and_evaluates(train, tmp_path):
    # observations (2, 3) and actions (2, 2): flattened for the network, in the env's own shape for the env
    run = train(
        "ppo_continuous.py", *TINY, "--env-id", "tests.envs:MatrixBox-v0", "--save-model", "--eval-episodes", "2"
    )
    assert "over 2 episodes" in run.stdout
    model = f"{run.run_dir}/ppo_continuous.pt"
    again = run_script("ppo_continuous.py", "--eval-checkpoint", model, "--eval-episodes", "2", cwd=run.cwd)
    assert again.returncode == 0 and "over 2 episodes" in again.stdout, again.stderr


def test_cuda_rng_state_is_saved_and_restored(monkeypatch, script):
    # no GPU needed: torch.cuda's RNG calls are stood in for, and the round trip through the training state is checked
    state, restored = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda new_state: restored.append(new_state))
    m = module(script)
    agent = torch.nn.Linear(2, 2)
    norm = (m.Normalization(m.Args(), 2),) if "continuous" in script else ()
    args = (agent, torch.optim.Adam(agent.parameters()), *norm)
    training = m.TrainState(*args, kl_coef=1.0)
    saved = training.state_dict()
    assert torch.equal(saved["rng"]["cuda"], state)
    training.load_state_dict(saved)
    assert len(restored) == 1 and torch.equal(restored[0], state)


def run_main(monkeypatch, cwd, script: str, *flags: str):
    """The script's main() in this process, from `cwd`; the signal handlers it installs are put back."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.chdir(cwd)
    try:
        return module(script).main(tyro.cli(module(script).Args, args=list(flags)))
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_final_observations_are_valued_normalised(monkeypatch, tmp_path):
    m = module("ppo_continuous.py")
    inputs, get_value = [], m.Agent.get_value
    monkeypatch.setattr(m.Agent, "get_value", lambda agent, x: inputs.append(x.clone()) or get_value(agent, x))
    run_main(monkeypatch, tmp_path, "ppo_continuous.py", "--env-id", "tests.envs:CountingBox-v0", *TINY)
    rows = torch.cat(inputs).flatten()
    assert len(inputs) > 8, "no time-limited episode was valued"  # 8 iterations: 8 calls for the next observations
    raw_final = float(COUNTING_TIME_LIMIT)  # the raw final observation; normalised, it is about 2
    assert not torch.any(rows == raw_final) and rows.abs().max() < 4


def test_final_observations_are_valued_from_the_state_that_just_acted(monkeypatch, tmp_path):
    m = module("ppo_discrete.py")
    calls, get_value, policy = [], m.Agent.get_value, m.Agent.get_action_and_value

    def recording_policy(agent, *args, **kwargs):
        out = policy(agent, *args, **kwargs)
        calls.append(("policy", tuple(s.clone() for s in out[4])))
        return out

    def recording_value(agent, x, lstm_state=None, starts=None):
        calls.append(("value", x.clone(), tuple(s.clone() for s in lstm_state), starts.clone()))
        return get_value(agent, x, lstm_state, starts)

    monkeypatch.setattr(m.Agent, "get_action_and_value", recording_policy)
    monkeypatch.setattr(m.Agent, "get_value", recording_value)
    run_main(
        monkeypatch,
        tmp_path,
        "ppo_discrete.py",
        "--env-id",
        "tests.envs:CountingEnv-v0",
        "--recurrent",
        "--num-envs",
        "1",
        "--num-steps",
        "64",
        "--num-minibatches",
        "1",
        "--total-timesteps",
        "256",
    )
    checked = 0
    for before, call in zip(calls, calls[1:]):
        if call[0] == "value" and torch.all(call[1] == COUNTING_TIME_LIMIT):  # the final observation of a time limit
            assert before[0] == "policy" and torch.all(call[3] == 0), "valued as a new episode"
            assert all(torch.equal(a, b) for a, b in zip(call[2], before[1])), "not the state that just acted"
            checked += 1
    assert checked >= 5


ALIGNED = {
    "ppo_discrete.py": ["--env-id", "tests.envs:Aligned-v0"],
    "ppo_continuous.py": ["--env-id", "tests.envs:AlignedBox-v0"],
}
ALIGNED_RUN = [
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--num-minibatches",
    "2",
    "--total-timesteps",
    "256",
    "--save-model",
    "--eval-episodes",
    "1",
]


@pytest.mark.parametrize(
    "script, flags",
    [(s, f) for s, f in ALIGNED.items()] + [("ppo_discrete.py", ALIGNED["ppo_discrete.py"] + ["--recurrent"])],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_resuming_mid_run_reproduces_the_uninterrupted_run(tmp_path, script, flags):
    # every episode ends at an iteration's end, so the resumed run's fresh episodes are the ones it would have had
    full = train_in(
        tmp_path,
        script,
        *flags,
        *ALIGNED_RUN,
        "--checkpoint-every",
        "3",
        "--keep-checkpoints",
        "5",
        "--loss",
        "kl-penalty",
    )
    middle = sorted(glob.glob(f"{full.run_dir}/checkpoints/*.pt"))[0]  # iteration 3 of 8
    resumed_cwd = tmp_path / "resumed"
    resumed_cwd.mkdir()
    resumed = train_in(resumed_cwd, script, *flags, *ALIGNED_RUN, "--loss", "kl-penalty", "--resume", middle)
    name = f"{script[:-3]}.pt"
    before = module(script).load_checkpoint(f"{full.run_dir}/{name}", "--resume")
    after = module(script).load_checkpoint(f"{resumed.run_dir}/{name}", "--resume")
    for key in ["model", "optimizer", "rng", "kl_coef", "global_step", "obs_rms", "reward_rms"]:
        if key in before:
            assert_identical(before[key], after[key], key)
    for tag in [
        "losses/value_loss",
        "losses/policy_loss",
        "losses/approx_kl",
        "charts/kl_coef",
        "charts/episodic_return",
    ]:
        later = [(step, value) for step, value in zip(full.steps(tag), full.scalars(tag)) if step > 3 * 32]
        assert list(zip(resumed.steps(tag), resumed.scalars(tag))) == later, tag


@pytest.mark.parametrize("final", [False, True])
def test_final_observations_count_in_the_statistics_only_with_norm_obs_final(monkeypatch, tmp_path, final):
    # 2 envs x 512 steps after a reset of 2: with --norm-obs-final (CleanRL) each ended episode's final observation too
    state = run_main(
        monkeypatch,
        tmp_path,
        "ppo_continuous.py",
        "--env-id",
        "tests.envs:CountingBox-v0",
        *TINY,
        *(["--norm-obs-final"] if final else []),
    )
    ended = len(counting_episodes(1, 2, 512))
    assert state.norm.obs_rms.count == pytest.approx(1e-4 + 2 + 2 * 512 + (ended if final else 0), abs=1e-6)
