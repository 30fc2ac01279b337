"""Teachers: the oracle teacher's facts for known Taxi states, and the OpenAI teacher's HTTP protocol against a
real local server (success, retries after 500s, timeout, cache hit, endpoint down)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from frugalft.reflect.teachers import OpenAITeacher, OracleTeacher, Situation, TeacherConfig, TeacherError

# ---- oracle teacher ----------------------------------------------------------------------------------------


def _taxi(task_id: str):
    import frugalft.envs as envs

    env = envs.make("DangerousTaxi", split="train")
    obs, info = env.reset(seed=0, options={"task_id": task_id})
    return env, obs, info


def _map_facts(map_text: str) -> tuple[tuple[int, int], list[str]]:
    """Taxi position and wall-blocked moves read from the ASCII map itself (independent of privileged())."""
    lines = map_text.splitlines()[1:-1]  # drop the +---+ borders
    for r, line in enumerate(lines):
        for ch in "TOX":
            if ch in line[1:-1]:
                c = (line.index(ch) - 1) // 2
                x = 2 * c + 1
                blocked = [m for m, hit in (("south", r == 4), ("north", r == 0), ("east", line[x + 1] == "|"),
                                            ("west", line[x - 1] == "|")) if hit]
                return (r, c), blocked
    raise AssertionError("no taxi on the map")


def _situation(env, obs, info, **kw) -> Situation:
    return Situation("taxi", obs, info["actions"], env.privileged(), env.oracle_action(), **kw)


@pytest.mark.parametrize("task_id", ["full-422", "pickup-043", "dropoff-422"])
def test_oracle_taxi_reflection_states_the_map_facts(task_id):
    env, obs, info = _taxi(task_id)
    (row, col), blocked = _map_facts(info["parts"]["map"])
    text = OracleTeacher().reflect(_situation(env, obs, info))
    assert f"row {row}, column {col}" in text
    if blocked:
        assert f"Walls block {' and '.join(blocked)} here" in text
    else:
        assert "No wall blocks the taxi here" in text
    assert len(text.split()) <= 80
    assert "Best move" not in text  # the paper's teacher never names the action outright
    revealed = OracleTeacher(reveal_action=True).reflect(_situation(env, obs, info))
    assert revealed.endswith(f"Best move: {env.oracle_action()}.")


def test_oracle_taxi_known_start_full_422():
    # Start of full-422 (drawn by hand from the map): taxi bottom row, column 1; passenger at R in the corner.
    env, obs, info = _taxi("full-422")
    text = OracleTeacher().reflect(_situation(env, obs, info))
    assert text.startswith("The taxi is at row 4, column 1; the passenger waits at R (row 0, column 0).")
    assert "The passenger is north and west of the taxi, 11 steps away." in text
    brief = OracleTeacher(brief=True).reflect(_situation(env, obs, info))
    assert brief == "Taxi 4,1; passenger 0,0. Walls: south west. Go north west, 11 steps."


def test_oracle_taxi_corrective_reflection_explains_the_mistake():
    env, obs, info = _taxi("full-422")
    before = env.privileged()
    obs, _, done, _, info = env.step("east")  # away from the passenger (north-west), not into a wall
    assert not done
    text = OracleTeacher().reflect(_situation(env, obs, info, mistake="east", before=before))
    assert text.startswith("The last move, east, was a mistake: it took the taxi away from the passenger "
                           "(12 steps now instead of 11). Recover by heading back.")


def test_oracle_teacher_refuses_unknown_env():
    with pytest.raises(TeacherError, match="taxi and autoexplore"):
        OracleTeacher().reflect(Situation("chess", "", [], {}, "e4"))


# ---- OpenAI-compatible teacher against a real local server ----------------------------------------------


class _Server:
    """A chat-completions endpoint on 127.0.0.1 that replays a script of (status, delay_s) answers."""

    def __init__(self, script: list[tuple[int, float]]):
        self.script = list(script)
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("Authorization")})
                status, delay = outer.script.pop(0) if outer.script else (200, 0.0)
                time.sleep(delay)
                n = len(outer.requests)
                payload = {"choices": [{"message": {"role": "assistant", "content": f" reflection {n} "}}]}
                data = json.dumps(payload if status == 200 else {"error": "boom"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _teacher(url: str, tmp_path, **kw) -> OpenAITeacher:
    cfg = TeacherConfig(kind="openai", base_url=url, model="coach-1", api_key_env="FRUGALFT_TEST_KEY",
                        timeout_s=kw.pop("timeout_s", 2.0), backoff_s=0.01, cache=str(tmp_path / "cache"), **kw)
    return OpenAITeacher(cfg)


SIT = Situation("taxi", "Map:\n+---+", ["south", "north"], {"taxi": [0, 0]}, "south")


def test_openai_teacher_success_request_format(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALFT_TEST_KEY", "sk-test")
    with _Server([(200, 0.0)]) as server:
        text = _teacher(server.url, tmp_path).reflect(SIT)
    assert text == "reflection 1"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "coach-1"
    system, user = req["body"]["messages"]
    assert system["role"] == "system" and "Never name the exact next action" in system["content"]
    assert "Map:\n+---+" in user["content"] and "south, north" in user["content"]


def test_openai_teacher_retries_after_500s(tmp_path):
    with _Server([(500, 0.0), (503, 0.0), (200, 0.0)]) as server:
        teacher = _teacher(server.url, tmp_path)
        assert teacher.reflect(SIT) == "reflection 3"
    assert len(server.requests) == 3 and teacher.requests_sent == 3


def test_openai_teacher_timeout_then_retry(tmp_path):
    with _Server([(200, 1.0), (200, 0.0)]) as server:
        teacher = _teacher(server.url, tmp_path, timeout_s=0.2)
        assert teacher.reflect(SIT) == "reflection 2"  # the first answer came too late
    assert teacher.requests_sent == 2


def test_openai_teacher_cache_hit_sends_nothing(tmp_path):
    with _Server([]) as server:
        first = _teacher(server.url, tmp_path).reflect(SIT)
        again = _teacher(server.url, tmp_path)  # a new process would see the same disk cache
        assert again.reflect(SIT) == first
        assert again.requests_sent == 0
        mistake = Situation(**{**SIT.__dict__, "mistake": "north"})
        assert again.reflect(mistake) == "reflection 2"  # a different request is not a hit
    assert "wrong action `north`" in server.requests[1]["body"]["messages"][1]["content"]


def test_openai_teacher_client_error_is_not_retried(tmp_path):
    with _Server([(400, 0.0)]) as server, pytest.raises(TeacherError, match="HTTP 400"):
        _teacher(server.url, tmp_path, max_retries=3).reflect(SIT)
    assert len(server.requests) == 1


def test_openai_teacher_endpoint_down_names_the_request(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    teacher = _teacher(f"http://127.0.0.1:{port}/v1", tmp_path, max_retries=2)
    with pytest.raises(TeacherError) as err:
        teacher.reflect(SIT)
    msg = str(err.value)
    assert f"127.0.0.1:{port}/v1/chat/completions" in msg and "'coach-1'" in msg
    assert "3 attempt(s)" in msg and "connection error" in msg


def test_data_generation_keeps_what_was_generated_when_the_endpoint_dies(tmp_path):
    from frugalft.reflect.warmup_data import DataConfig, generate

    cfg = DataConfig(levels=[0], tasks_per_level=3, negatives_per_episode=0,
                     teacher=TeacherConfig(kind="openai", backoff_s=0.01, max_retries=1, timeout_s=2.0,
                                           cache=str(tmp_path / "cache")))
    with _Server([(200, 0.0)] * 4 + [(500, 0.0)] * 10) as server:
        cfg.teacher.base_url = server.url
        with pytest.raises(TeacherError, match="4 steps generated before it"):
            generate(cfg, tmp_path / "data", log=lambda *a: None)
    partial = (tmp_path / "data" / "partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["reflection"] for line in partial] == [f"reflection {i}" for i in range(1, 5)]
    assert not (tmp_path / "data" / "policy.jsonl").exists()
    # The rerun pays only for the requests not yet answered (the cache holds the first four).
    with _Server([]) as server:
        cfg.teacher.base_url = server.url
        counts = generate(cfg, tmp_path / "data", log=lambda *a: None)
    assert len(server.requests) == counts["steps"] - 4
