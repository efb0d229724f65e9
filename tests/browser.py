"""Headless chromium for the tests of pages: `tfchargen serve`'s page and the web export.

``page_generate(url, profile)`` opens a page that presses Generate from its query string and
waits until its output is done; ``Chromium`` is the DevTools-protocol driver beneath it.
``CHROMIUM`` is the browser's path, None when none is installed (the tests skip, or fail
under CI).
"""

import base64
import json
import os
import select
import shutil
import subprocess
import time

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """Headless chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON commands on fd 3, replies on fd 4, each ending in a NUL byte), so a test can read the
    page's DOM while a stream is still arriving (``--dump-dom`` reads it once, and
    ``--virtual-time-budget`` does not wait for a response body that is still streaming).

    >>> c = Chromium("/usr/bin/chromium", "/tmp/profile")  # doctest: +SKIP
    >>> c.open("http://127.0.0.1:8501/"); c.eval("document.title")  # doctest: +SKIP
    'tfchargen'
    """

    def __init__(self, binary, profile, size=(1000, 800)):
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds():  # dup2 onto itself would keep the pipe's close-on-exec flag
            for fd, target in ((os.dup(to_child), 3), (os.dup(from_child), 4)):
                os.dup2(fd, target)

        self.proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu",
                                      "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                      f"--window-size={size[0]},{size[1]}", "about:blank"],
                                     preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._id, self._buf, self.session = 0, b"", None

    def send(self, method, timeout=60, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}  # the reply has the same id
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"no reply to {method}")
            data = os.read(self._r, 1 << 20)
            if not data:
                raise RuntimeError("chromium exited")
            self._buf += data

    def open(self, url):
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def eval(self, expression):
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


OUTPUT = "(o => [o.textContent, o.dataset.done || '', o.dataset.chunks || '', " \
         "document.getElementById('status').textContent])(document.getElementById('output'))"


def page_generate(url, profile, screenshot=None):
    """Opens the page at url (which presses Generate) until it is done -> (text, chunks, status)."""
    browser = Chromium(CHROMIUM, profile)
    try:
        browser.open(url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text, done, chunks, status = browser.eval(OUTPUT) or ("", "", "", "")
            if done == "1":
                break
            time.sleep(0.05)
        assert done == "1", (text, status)
        if screenshot:
            browser.screenshot(screenshot)
        return text, int(chunks or 0), status
    finally:
        browser.close()
