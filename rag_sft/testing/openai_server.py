"""A local OpenAI-compatible chat-completions server with scripted latency and faults.

For the tests, the LLM benchmark and trying `RAG_SFT_COMPLETION_STRATEGY=llm` without an
account: `rag-sft llm-stub` serves it on 127.0.0.1. It speaks the HTTP the `openai` client
speaks (POST /v1/chat/completions, GET /v1/models) and answers each request with a
deterministic corrected answer, the opening of the request's first document (`corrected_answer`:
the stand-in corrector of `make run`'s sample data), unless a fault is scripted for it:

    rate_limit[:seconds]  429 with Retry-After (seconds, default 1)
    server_error          500
    timeout:seconds       waits that long before answering (longer than the client's timeout)
    malformed             200 with a body that is not JSON
    empty_choices         200 with "choices": []
    empty                 200 with an empty message
    truncated             200 with finish_reason "length"
    refusal               200 with a refusal instead of content
    bad_request           400
    unauthorized          401
    not_json              200 with prose where a judge's JSON verdict is expected
    parts                 200 with the answer as a list of text parts (the multi-part content form)
    image_parts           200 with a list of parts holding an image, no text
    huge[:characters]     200 with the answer repeated to that length (default 5,000,000), finish "stop"
    invisible             200 with zero-width characters and whitespace only
    no_model              200 with the answer and no `model` field

`faults` maps a marker to the outcomes of successive requests whose user message contains
it; after the list, such requests are answered normally. The marker "" matches every request.

Judge requests (the system message is `model_comparison.JUDGE_RUBRIC`) get a JSON verdict:
the one scripted with `script_verdict(marker, labels, score)` for an answer containing the
marker, else the *stand-in judge's*: a deterministic heuristic over the request's text (an
answer sharing little with the documents is a factuality_error, a short one incomplete, one
with absolute words overconfident). It is no evaluator of quality, only a way to run the path.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from rag_sft.core.model_comparison import JUDGE_RUBRIC


@dataclass
class ServedRequest:
    content_sha: str  # sha256 of the user message
    status: int
    fault: str | None
    authorization: str | None
    model: str
    answer: str | None = None


@dataclass
class StubState:
    latency_s: float = 0.0
    faults: dict[str, list[str]] = field(default_factory=dict)
    verdicts: dict[str, dict] = field(default_factory=dict)  # marker in a judged answer -> verdict
    served: list[ServedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, content: str) -> str | None:
        with self.lock:
            for marker, outcomes in self.faults.items():
                if marker in content and outcomes:
                    return outcomes.pop(0)
        return None

    def verdict(self, content: str) -> dict:
        answer = content.rpartition("ANSWER:\n")[2]
        with self.lock:
            scripted = next((v for marker, v in self.verdicts.items() if marker in answer), None)
        return scripted or stand_in_verdict(content)

    def answered(self) -> Counter:
        """Successful answers per user-message hash."""
        with self.lock:
            return Counter(r.content_sha for r in self.served if r.status == 200 and r.answer)

    def stats(self) -> dict:
        with self.lock:
            statuses = Counter(r.status for r in self.served)
            return {
                "requests": len(self.served),
                "answered": sum(1 for r in self.served if r.status == 200 and r.answer),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "max_in_flight": self.max_in_flight,
            }


_FIRST_DOCUMENT = re.compile(r"\[(?:文档|Document )1\] (.+?)(?:\n\n|$)", re.S)
_SENTENCE_END = re.compile(r"[。！？!?.](?=\s|$)|[。！？]")
STAND_IN_ANSWER_CHARS = 200


def corrected_answer(model: str, content: str) -> str:
    """The stand-in corrector's answer: the opening sentences of the request's first document
    (the best-ranked one in a rule-5 prompt), at most about 200 characters, so that a stand-in
    correction is grounded in what was retrieved; a request with no documents gets a placeholder
    naming the model and the request."""
    found = _FIRST_DOCUMENT.search(content)
    if found is None:
        digest = hashlib.sha256(content.encode()).hexdigest()[:12]
        return f"Corrected answer {digest}, written by {model}."
    document = found.group(1).strip()
    ends = [match.end() for match in _SENTENCE_END.finditer(document)]
    cut = max((end for end in ends if end <= STAND_IN_ANSWER_CHARS), default=min(ends, default=len(document)))
    return document[:cut].strip()


ABSOLUTE_WORDS = ("certainly", "definitely", "must", "always", "一定", "肯定", "绝对", "必须")


def stand_in_verdict(content: str) -> dict:
    """The stand-in judge: labels from the overlap of the answer's character bigrams with the
    documents and the question, its length and its wording. Deterministic."""
    head, _, answer = content.rpartition("ANSWER:\n")
    docs, _, question = head.partition("QUESTION:\n")
    grams = {answer[i : i + 2] for i in range(len(answer) - 1)}
    supported = len(grams & {docs[i : i + 2] for i in range(len(docs) - 1)}) / max(len(grams), 1)
    on_topic = len(grams & {question[i : i + 2] for i in range(len(question) - 1)}) / max(len(grams), 1)
    labels = []
    if supported < 0.5:
        labels.append("factuality_error")
    if len(answer.strip()) < 40:
        labels.append("incomplete_answer")
    if supported < 0.2 and on_topic < 0.05:
        labels.append("low_relevance")
    if any(word in answer.lower() for word in ABSOLUTE_WORDS):
        labels.append("overconfidence")
    return {"labels": labels, "score": round(1 - 0.25 * len(labels), 2)}


def _completion_body(model: str, content: str | list | None, finish_reason: str, refusal: str | None, prompt: str) -> dict:
    return {
        "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt) // 4 + 1,
            "completion_tokens": len(str(content or "")) // 4 + 1,
            "total_tokens": len(prompt) // 4 + len(str(content or "")) // 4 + 2,
        },
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do
    state: StubState

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (~40 ms a request). Real servers set it too.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, orjson.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}))
        elif self.path.rstrip("/").endswith("/stats"):
            self._send(200, orjson.dumps(self.state.stats()))
        else:
            self._send(404, b'{"error": {"message": "not found"}}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = orjson.loads(self.rfile.read(length) or b"{}")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        state = self.state
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            self._answer(request)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, request: dict) -> None:
        state = self.state
        model = request.get("model", "stub")
        messages = request.get("messages") or []
        content = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        prompt = "".join(m.get("content") or "" for m in messages)
        fault = state.next_fault(content)
        kind, _, argument = (fault or "").partition(":")
        if kind == "timeout":
            time.sleep(float(argument or 5))
        elif state.latency_s:
            time.sleep(state.latency_s)
        record = ServedRequest(
            hashlib.sha256(content.encode()).hexdigest(), 200, fault, self.headers.get("Authorization"), model
        )
        headers: dict[str, str] = {}
        judging = bool(messages) and messages[0].get("role") == "system" and messages[0].get("content") == JUDGE_RUBRIC
        answer = orjson.dumps(state.verdict(content)).decode() if judging else corrected_answer(model, content)
        if kind == "rate_limit":
            record.status, body = 429, b'{"error": {"message": "Rate limit reached", "type": "requests"}}'
            headers["Retry-After"] = argument or "1"
        elif kind == "server_error":
            record.status, body = 500, b'{"error": {"message": "The server had an error"}}'
        elif kind == "bad_request":
            record.status, body = 400, b'{"error": {"message": "This model\'s maximum context length is exceeded"}}'
        elif kind == "unauthorized":
            record.status, body = 401, b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
        elif kind == "malformed":
            body = b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": {"content": "Corr'
        elif kind == "empty_choices":
            body = orjson.dumps({**_completion_body(model, "", "stop", None, prompt), "choices": []})
        elif kind == "empty":
            body = orjson.dumps(_completion_body(model, "", "stop", None, prompt))
        elif kind == "truncated":
            body = orjson.dumps(_completion_body(model, answer[:20], "length", None, prompt))
        elif kind == "not_json":
            body = orjson.dumps(_completion_body(model, "The answer looks right to me.", "stop", None, prompt))
        elif kind == "refusal":
            body = orjson.dumps(_completion_body(model, None, "stop", "I can't help with that.", prompt))
        elif kind == "parts":
            record.answer = answer
            half = len(answer) // 2
            parts = [{"type": "text", "text": answer[:half]}, {"type": "text", "text": answer[half:]}]
            body = orjson.dumps(_completion_body(model, parts, "stop", None, prompt))
        elif kind == "image_parts":
            parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
            body = orjson.dumps(_completion_body(model, parts, "stop", None, prompt))
        elif kind == "huge":
            characters = int(argument or 5_000_000)
            huge = (answer + " ") * (characters // (len(answer) + 1) + 1)
            body = orjson.dumps(_completion_body(model, huge[:characters], "stop", None, prompt))
        elif kind == "invisible":
            body = orjson.dumps(_completion_body(model, "\u200b \u200b\n\u2060\ufeff", "stop", None, prompt))
        elif kind == "no_model":
            record.answer = answer
            body = orjson.dumps({k: v for k, v in _completion_body(model, answer, "stop", None, prompt).items() if k != "model"})
        else:
            record.answer = answer
            body = orjson.dumps(_completion_body(model, answer, "stop", None, prompt))
        with state.lock:
            state.served.append(record)
        self._send(record.status, body, headers)


class OpenAIStub:
    """The server on 127.0.0.1 (a free port unless given), serving from a background thread."""

    def __init__(self, latency_s: float = 0.0, faults: Mapping[str, Sequence[str]] | None = None, port: int = 0):
        self.state = StubState(latency_s=latency_s, faults={k: list(v) for k, v in (faults or {}).items()})
        handler = type("StubHandler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, marker: str, *outcomes: str) -> None:
        with self.state.lock:
            self.state.faults.setdefault(marker, []).extend(outcomes)

    def script_verdict(self, marker: str, labels: Sequence[str], score: float = 0.5) -> None:
        """Judge every answer containing `marker` with these labels, on every request."""
        with self.state.lock:
            self.state.verdicts[marker] = {"labels": list(labels), "score": score}

    def start(self) -> OpenAIStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def running_stub(latency_s: float = 0.0, faults: Mapping[str, Sequence[str]] | None = None) -> Iterator[OpenAIStub]:
    stub = OpenAIStub(latency_s, faults).start()
    try:
        yield stub
    finally:
        stub.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8199, help="0 for a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    stub = OpenAIStub(args.latency, port=args.port)
    print(f"OpenAI-compatible stub on {stub.base_url} (GET {stub.base_url}/stats for counts)", flush=True)
    try:
        stub._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stub._server.server_close()


if __name__ == "__main__":
    main()
