"""Runs `python -m <module> <args>` for the command-line tests without paying the imports each time.

A process start here costs ~10 s, most of it importing TensorFlow, JAX and the package. This
server imports them once (nothing that defines command-line flags, and no JAX backend is started),
then runs each requested command in a forked child exactly as `python -m` would (`runpy`, with
`__name__ == "__main__"`, its own argv, cwd, stdout and stderr files, and a fresh set of absl
flags, since the experiment modules are first imported in the child). The exit status is the
child's. Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
"""
import importlib
import json
import os
import runpy
import sys
import time
import traceback


PRELOADED = ("cv2", "flax", "jax", "matplotlib", "optax", "orbax.checkpoint", "sklearn", "tensorflow",
             "lesion_jax.tasks.classification", "lesion_jax.pipelines.maskrcnn.task", "lesion_jax.tasks.runner",
             "lesion_jax.tasks.segmentation")


def _child(request: dict) -> int:
  os.chdir(request["cwd"])
  for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
  sys.stdin = open(os.devnull)  # pylint: disable=consider-using-with
  sys.argv = [request["module"], *request["args"]]
  try:
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    return 0
  except SystemExit as e:  # what the interpreter does with sys.exit(code)
    if e.code is None or isinstance(e.code, int):
      return e.code or 0
    print(e.code, file=sys.stderr)
    return 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1


def _run(request: dict) -> dict:
  sys.stdout.flush()
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      code = _child(request)
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)  # no atexit handlers or finalizers of the parent's state
  deadline = time.monotonic() + request["timeout"]
  while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
      return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": False}
    if time.monotonic() > deadline:
      os.kill(pid, 9)
      os.waitpid(pid, 0)
      return {"returncode": -9, "timed_out": True}
    time.sleep(0.05)


def main() -> None:
  for name in PRELOADED:
    importlib.import_module(name)
  print(json.dumps({"ready": True}), flush=True)
  for line in sys.stdin:
    print(json.dumps(_run(json.loads(line))), flush=True)


if __name__ == "__main__":
  main()
