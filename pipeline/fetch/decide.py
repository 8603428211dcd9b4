"""What happens to an ID after an answer: one pure decision core (no asyncio, no I/O).

    decide(state, answer, budget) -> Decision(next, state, learn, failure)

`state` is what the ID has spent so far (`IdState`), `answer` one `AnswerClass` class — of the whole
request the ID travelled in, or of the ID's own command — and `budget` the one `RetryBudget`
of the run. The decision says what comes next for the ID:

    Next       meaning                                     driver's reaction
    DONE       the record arrived                          emit DealFetched
    FAIL       the ID ends here (`failure` says how)        emit DealFailed
    RETRY      one attempt spent: try again after backoff   sleep, re-queue
    REQUEUE    nothing spent (a limit, a victim of a split) re-queue at once (the pacer waits)
    SPLIT      the whole request may be failing because     halve the group, re-queue both
               of one command: isolate it                   halves (no attempt spent)
    REGROUP    a failure that may recur for this very set:  sleep, send the same set again
               a strike on the group (members spend no
               attempt), or an isolated ID's own attempt
    ABORT      the run cannot succeed                       raise FatalPortalError

A failure that may recur ("repeat": a 500, a gateway or read timeout) is told apart from an
outage before anything is split: the first sight is a strike on the group; the set is split on
a repeat only when the portal has answered some request since the set was formed
(`GroupView.healthy`). When nothing was answered since, the driver asks the portal once with a
cheap health probe (`needs_probe`); a failed probe is an outage (`GroupView.outage`) until the
portal answers again, and the members fall back to plain per-ID backoff and rejoin normal
batches.

and `learn` what the pacer must be told (once per answer, however many IDs it refused). The
engine (`fetch_deals`) and the whole-run calls (`PortalClient.call`) are thin drivers of it; a
second fetch strategy drives the same core.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal

from pipeline.config import FetchConfig
from pipeline.fetch.classify import Action, Context, classify, split_trigger
from pipeline.outcomes import ErrorClass

RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
LIMIT_RETRIES_EXHAUSTED = "LIMIT_RETRIES_EXHAUSTED"
NOT_EXECUTED = "NOT_EXECUTED"

#: Where an answer sat (see `AnswerClass`).
Scope = Literal["top", "command", "missing", "ok"]


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Every bound on trying again, in one value.

    `attempts`: attempts per ID (`fetch.max_attempts`); faults spend them. `limit_waits`: limit
    answers (503/429) spend no attempt, but an ID may meet them only this many times, so no
    loop is unbounded even against a portal that never lets us through. `auth_refreshes`: OAuth
    refreshes within one attempt. `call_attempts`: the floor for one whole-run call (the fields
    call, a list page), which stands for the whole run, so `--max-attempts 1` must not let one
    500 end it.
    """

    attempts: int = 5
    limit_waits: int = 100
    auth_refreshes: int = 2
    call_attempts: int = 3

    @classmethod
    def from_config(cls, config: FetchConfig) -> RetryBudget:
        return cls(attempts=config.max_attempts)

    def for_whole_call(self) -> RetryBudget:
        """The budget of one whole-run call: at least `call_attempts` attempts."""
        return replace(self, attempts=max(self.attempts, self.call_attempts))


@dataclass(frozen=True, slots=True)
class IdState:
    """What one ID has spent: attempts (faults), waits (limit answers), and whether it already
    had its one free strike (`struck`: the first repeat-kind failure of a group it was in)."""

    attempts: int = 0
    limit_hits: int = 0
    struck: bool = False


class Next(Enum):
    DONE = "done"
    FAIL = "fail"
    RETRY = "retry"
    REQUEUE = "requeue"
    SPLIT = "split"
    REGROUP = "regroup"
    ABORT = "abort"


class Learn(Enum):
    """What the pacer must learn from the answer."""

    NOTHING = "nothing"
    RATE_LIMITED = "rate_limited"
    OPERATING_LIMITED = "operating_limited"


@dataclass(frozen=True, slots=True)
class AnswerClass:
    """One answer class, as the decision needs it.

    `scope`: "top" (the whole request failed; every ID it carried meets the same answer),
    "command" (the ID's own command inside a batch, or a plain get's answer about its one ID),
    "missing" (sent, but neither answered nor refused), "ok" (the record arrived). `code`,
    `description`, `status`: the portal's error; `message` what an outcome would say (masked).
    """

    scope: Scope
    code: str = ""
    description: str = ""
    status: int | None = None
    message: str = ""
    #: The classification when the caller already has it (transport failures are transient).
    action: Action | None = None

    def classified(self) -> Action:
        if self.action is not None:
            return self.action
        context: Context = "command" if self.scope == "command" else "top"
        return classify(self.status, self.code, self.description, context)


@dataclass(frozen=True, slots=True)
class Failure:
    """How an ID ends: the fields of its DealFailed."""

    code: str
    message: str
    status: int | None
    retryable: bool
    error_class: ErrorClass


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    state: IdState
    learn: Learn = Learn.NOTHING
    failure: Failure | None = None


OK = AnswerClass("ok")


def learn_for(action: Action) -> Learn:
    """What the pacer learns from an answer of this class."""
    if action is Action.RATE_LIMIT:
        return Learn.RATE_LIMITED
    if action is Action.OPERATING_LIMIT:
        return Learn.OPERATING_LIMITED
    return Learn.NOTHING


def decide(state: IdState, answer: AnswerClass, budget: RetryBudget) -> Decision:
    """The next state of one ID after `answer` (per-ID answers and non-splitting whole ones)."""
    if answer.scope == "ok":
        return Decision(Next.DONE, state)
    if answer.scope == "missing":
        return spend(state, answer, budget)
    action = answer.classified()
    learn = learn_for(action)
    if action is Action.PERMANENT:
        spent = replace(state, attempts=state.attempts + 1)
        return Decision(Next.FAIL, spent, learn, _failure(answer, False, action))
    if learn is not Learn.NOTHING:
        return wait(state, answer, budget, learn)
    if action is Action.FATAL:
        return Decision(Next.ABORT, state, learn)
    # A fault (an expired token inside one command too: the client refreshes only on a
    # whole answer): one attempt.
    return spend(state, answer, budget)


def wait(state: IdState, answer: AnswerClass, budget: RetryBudget, learn: Learn) -> Decision:
    """A limit answer: no attempt spent, at most `budget.limit_waits` times."""
    waited = replace(state, limit_hits=state.limit_hits + 1)
    if waited.limit_hits <= budget.limit_waits:
        return Decision(Next.REQUEUE, waited, learn)
    failure = Failure(
        LIMIT_RETRIES_EXHAUSTED,
        f"still limited after {waited.limit_hits} waits; last answer: {answer.message}",
        answer.status,
        True,
        Action.RATE_LIMIT.error_class,
    )
    return Decision(Next.FAIL, waited, learn, failure)


def spend(
    state: IdState, answer: AnswerClass, budget: RetryBudget, *, real_cause: bool = False
) -> Decision:
    """A fault: one attempt spent; the ID ends, retryable, once the budget is gone.

    `real_cause`: the ID failed alone, so the failure is its own and its outcome carries the
    portal's code and message rather than RETRIES_EXHAUSTED.
    """
    spent = replace(state, attempts=state.attempts + 1)
    if spent.attempts < budget.attempts:
        return Decision(Next.RETRY, spent)
    if real_cause:
        failure = _failure(answer, True, Action.TRANSIENT)
    else:
        failure = Failure(
            RETRIES_EXHAUSTED,
            f"gave up after {spent.attempts} attempts; last error: {answer.message}",
            answer.status,
            True,
            Action.TRANSIENT.error_class,
        )
    return Decision(Next.FAIL, spent, failure=failure)


def decide_call(state: IdState, answer: AnswerClass, budget: RetryBudget) -> Decision:
    """The same rules for one whole-run call (the fields call, a list page), which stands for
    the run: at least `budget.call_attempts` attempts, and a per-record refusal refuses it."""
    if answer.classified() is Action.PERMANENT:
        return Decision(Next.ABORT, state)
    return decide(state, answer, budget.for_whole_call())


@dataclass(frozen=True, slots=True)
class GroupView:
    """What the driver knows about the set a failed whole request carried.

    `strikes`: repeat-kind failures this set (or the set it was split from) already met.
    `healthy`: the portal answered some request (any batch, or a health probe) since this set
    was formed, so a repeat is this set's doing rather than an outage. `outage`: the last
    health probe failed and the portal has answered nothing since: stop splitting.
    """

    strikes: int = 0
    healthy: bool = False
    outage: bool = False


def needs_probe(size: int, answer: AnswerClass, view: GroupView) -> bool:
    """Whether `decide_group` would split this set if only the portal were known to be up: a
    repeat-kind failure of a struck set of two or more IDs, with no evidence either way. A
    WRONG_ENCODING is the server's own answer and never needs one."""
    if split_trigger(answer.code, answer.status) != "repeat":
        return False
    return size > 1 and view.strikes > 0 and not view.healthy and not view.outage


def decide_group(
    states: list[IdState], answer: AnswerClass, budget: RetryBudget, view: GroupView
) -> tuple[Next, list[Decision], int]:
    """A whole request carrying `states` failed with a fault that may be one command's doing.

    Returns what happens to the group (SPLIT, REGROUP, FAIL for a culprit alone, or RETRY:
    each ID on its own, back among normal batches), the per-ID decisions, and the group's
    strikes after this answer.
    """
    trigger = split_trigger(answer.code, answer.status)
    if trigger is None:
        return Next.RETRY, [spend(s, answer, budget) for s in states], view.strikes
    if trigger == "now":
        # The server answered (WRONG_ENCODING is the answer's content): never an outage.
        if len(states) == 1:
            (state,) = states
            spent = replace(state, attempts=state.attempts + 1)
            failure = _failure(answer, False, Action.PERMANENT)
            return Next.FAIL, [Decision(Next.FAIL, spent, failure=failure)], view.strikes
        return Next.SPLIT, [Decision(Next.REQUEUE, s) for s in states], 0
    if len(states) > 1 and view.strikes == 0:
        # The free strike comes first even in an outage: an ID that already had its strike
        # pays an attempt for it, so the outage costs each ID one extra request at most.
        return Next.REGROUP, [strike(s, answer, budget) for s in states], 1
    if view.outage:
        return Next.RETRY, [spend(s, answer, budget) for s in states], 0
    if len(states) == 1:
        (state,) = states
        # Alone and failing: its own attempts, and it stays alone (back among other IDs it
        # would fail them again).
        return Next.REGROUP, [spend(state, answer, budget, real_cause=True)], max(view.strikes, 1)
    if view.healthy:
        # The halves inherit the strike: a half failing the same way splits at once (given
        # fresh evidence that the portal is up).
        return Next.SPLIT, [Decision(Next.REQUEUE, s) for s in states], 1
    # No evidence that the portal is up (no probe could be sent): an outage looks exactly
    # like this, and splitting it would multiply the requests against a portal that is down.
    return Next.RETRY, [spend(s, answer, budget) for s in states], 0


def strike(state: IdState, answer: AnswerClass, budget: RetryBudget) -> Decision:
    """The first sight of a repeat-kind failure: a strike on the group, free for an ID that has
    not had one yet (a victim of one poison deal must not pay for it); an ID that already had
    its free strike spends an attempt, so an outage costs each ID at most one extra request."""
    if state.struck:
        spent = spend(state, answer, budget)
        return replace(spent, next=Next.REGROUP) if spent.next is Next.RETRY else spent
    return Decision(Next.REGROUP, replace(state, struck=True))


def _failure(answer: AnswerClass, retryable: bool, action: Action) -> Failure:
    """The portal's own code and text (a record's refusal, or a culprit isolated alone)."""
    return Failure(answer.code, answer.description, answer.status, retryable, action.error_class)


__all__ = [
    "LIMIT_RETRIES_EXHAUSTED",
    "NOT_EXECUTED",
    "OK",
    "RETRIES_EXHAUSTED",
    "AnswerClass",
    "Decision",
    "Failure",
    "GroupView",
    "IdState",
    "Learn",
    "Next",
    "RetryBudget",
    "Scope",
    "decide",
    "decide_call",
    "decide_group",
    "learn_for",
    "needs_probe",
    "spend",
    "strike",
    "wait",
]
