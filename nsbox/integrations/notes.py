"""The note an integration adds to a tool result when the sandbox blocked something, so
the model reads "the policy stopped this" instead of an ordinary error to retry."""

PREFIX = "[nsbox] "
SHOWN = 3  # denials named in the note; the rest are counted


def denial_note(denials, policy=None, with_hints: bool = True) -> str:
    """`[nsbox] blocked by policy: write /home/u/.bashrc (outside the writable roots); ...`
    and a `[nsbox] hint: ...` line per kind of denial, each ending in a newline; "" when
    nothing was blocked. denials: Result.denials; policy: the run's, for exact hints."""
    denials = tuple(denials)
    if not denials:
        return ""
    total = len(denials)
    named = [denial.describe() for denial in _shown(denials)]
    if total > SHOWN:
        named.append(f"and {total - SHOWN} more")
    lines = [f"{PREFIX}blocked by policy: " + "; ".join(named)]
    if with_hints:
        from nsbox.policy.hints import hints

        lines.extend(f"{PREFIX}hint: {hint}" for hint in hints(denials, policy))
    return "".join(line + "\n" for line in lines)


def _shown(denials) -> list:
    """The first SHOWN denials, each wall's first one ahead of the rest: a shell's
    start-up files failing to write must not crowd out the refused request."""
    firsts = {}
    for denial in denials:
        firsts.setdefault(denial.wall, denial)
    chosen = list(firsts.values())[:SHOWN]
    chosen += [d for d in denials if d not in chosen][:SHOWN - len(chosen)]
    return sorted(chosen, key=denials.index)


def with_note(output: str, note: str) -> str:
    """`output` with `note` on lines of its own after it."""
    if not note:
        return output
    if output and not output.endswith("\n"):
        output += "\n"
    return output + note
