"""`tfchargen generate --stream`: one prompt's text printed chunk by chunk as it arrives,
from a local SavedModel (``--model``) or a TF Serving server (``--server``)."""

from __future__ import annotations

import sys

from tfchargen import contract
from tfchargen.cli.flags import DEFAULT_PROMPT
from tfchargen.common.errors import with_failed_check
from tfchargen.contract import Controls
from tfchargen.generation.seeds import row_seed
from tfchargen.generation.streaming import chunks
from tfchargen.savedmodel.locate import load_savedmodel


def cli_stream(args) -> int:
    """`tfchargen generate --stream`: prints one prompt's text chunk by chunk as it arrives,
    from a local SavedModel (--model) or a TF Serving server (--server). The controls have
    passed the CLI's check_values (as a stream's)."""
    prompts = args.prompt or [DEFAULT_PROMPT]
    if len(prompts) > 1 or args.num_samples > 1 or args.temperatures or args.json:
        print("tfchargen generate: error: --stream prints one text: give one --prompt, without "
              "--num-samples, --temperatures or --json", file=sys.stderr)
        return 2
    if not 1 <= args.chunk <= contract.MAX_NEW_CHARS:
        print(f"tfchargen generate: error: --chunk must be in 1..{contract.MAX_NEW_CHARS}", file=sys.stderr)
        return 2
    # The one row is row 0 of `generate`'s rule, so --stream prints what generate prints.
    prompt = prompts[0].encode("utf-8")
    controls = Controls(max_length=args.max_length, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, seed=row_seed(args.seed, 0))
    if args.server:
        from tfchargen.serving.client import ServingError, connect

        try:  # a client's stream(): REST uses the server's :stream where it has one
            with connect(args.server, args.model_name, args.protocol, version=args.version,
                         timeout=args.timeout) as client:
                _print(client.stream(prompt, controls, args.chunk))
        except ServingError as e:
            print(f"\ntfchargen generate: error: {with_failed_check(str(e))}", file=sys.stderr)
            return 2
    else:
        from tfchargen.savedmodel.call import local_predict

        loaded, _ = load_savedmodel(args.model, args.version)
        _print(out["text"][0].decode("utf-8") for out in chunks(local_predict(loaded), [prompt], controls, args.chunk))
    return 0


def _print(texts) -> None:
    for text in texts:
        sys.stdout.write(text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
