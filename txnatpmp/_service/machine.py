"""
The life of a service's link to its gateway, as one explicit state machine.

Every (state, input) pair is declared in L{TRANSITIONS}: the next state and the name of the
action to run, or L{IGNORE}.  An enum with one table, rather than Automat: the whole behaviour
is one readable (and testable) literal, and it type-checks under mypy --strict, which Automat's
decorated methods do not.  The actions themselves live in L{txnatpmp._service.link}.
"""

from __future__ import annotations

from enum import Enum
from typing import Callable


class State(Enum):
    """Where the link to the gateway stands."""

    IDLE = "idle"  #: not started
    FINDING = "finding"  #: looking for the gateway (the default route) at start
    CONNECTED = "connected"  #: the gateway answers; mappings are created and renewed
    SILENT = "silent"  #: the gateway stopped answering; waiting before the next probe
    PROBING = "probing"  #: one request (after looking for the gateway again) stands for all
    RECOVERING = "recovering"  #: the gateway lost its state; R19's random wait before re-creating
    STOPPING = "stopping"  #: everything cancelled; deleting the mappings
    STOPPED = "stopped"  #: deleted (or given up); sockets closed


class Input(Enum):
    """What can happen to the link."""

    START = "start"
    FOUND_NEW = "found a gateway"  #: a gateway other than the current one (or the first)
    FOUND_SAME = "found the same gateway"
    NOT_FOUND = "no gateway found"
    HEARD = "heard from the gateway"  #: an answer, or a valid announcement
    SILENCE = "silence"  #: a request went unanswered for a whole retransmission schedule
    STATE_LOST = "state lost"  #: the epoch says the gateway rebooted
    TIMER = "timer"  #: the link's one wait ended
    STOP = "stop"
    DELETED = "deleted"  #: stopping is done


#: The action name of a pair that changes nothing.
IGNORE = ""

S, I = State, Input

#: (state, input) -> (next state, action).  Every pair appears exactly once.
TRANSITIONS: dict[tuple[State, Input], tuple[State, str]] = {
    # Not started.
    (S.IDLE, I.START): (S.FINDING, "find"),
    (S.IDLE, I.FOUND_NEW): (S.IDLE, "drop_found"),
    (S.IDLE, I.FOUND_SAME): (S.IDLE, IGNORE),
    (S.IDLE, I.NOT_FOUND): (S.IDLE, IGNORE),
    (S.IDLE, I.HEARD): (S.IDLE, IGNORE),
    (S.IDLE, I.SILENCE): (S.IDLE, IGNORE),
    (S.IDLE, I.STATE_LOST): (S.IDLE, IGNORE),
    (S.IDLE, I.TIMER): (S.IDLE, IGNORE),
    (S.IDLE, I.STOP): (S.STOPPING, "cancel_all"),
    (S.IDLE, I.DELETED): (S.IDLE, IGNORE),
    # Looking for the gateway at start: nothing else can have happened yet.
    (S.FINDING, I.START): (S.FINDING, IGNORE),
    (S.FINDING, I.FOUND_NEW): (S.CONNECTED, "connect"),
    (S.FINDING, I.FOUND_SAME): (S.FINDING, IGNORE),  # nothing to be the same as yet
    (S.FINDING, I.NOT_FOUND): (S.SILENT, "fall_silent"),  # callers waiting hear why
    (S.FINDING, I.HEARD): (S.FINDING, IGNORE),
    (S.FINDING, I.SILENCE): (S.FINDING, IGNORE),
    (S.FINDING, I.STATE_LOST): (S.FINDING, IGNORE),
    (S.FINDING, I.TIMER): (S.FINDING, IGNORE),
    (S.FINDING, I.STOP): (S.STOPPING, "cancel_all"),
    (S.FINDING, I.DELETED): (S.FINDING, IGNORE),
    # Talking to the gateway.
    (S.CONNECTED, I.START): (S.CONNECTED, IGNORE),
    (S.CONNECTED, I.FOUND_NEW): (S.CONNECTED, "move"),  # the gateway speaks PCP now
    (S.CONNECTED, I.FOUND_SAME): (S.CONNECTED, IGNORE),
    (S.CONNECTED, I.NOT_FOUND): (S.CONNECTED, IGNORE),
    (S.CONNECTED, I.HEARD): (S.CONNECTED, IGNORE),
    (S.CONNECTED, I.SILENCE): (S.SILENT, "fall_silent"),
    (S.CONNECTED, I.STATE_LOST): (S.RECOVERING, "wait_to_recover"),
    (S.CONNECTED, I.TIMER): (S.CONNECTED, IGNORE),
    (S.CONNECTED, I.STOP): (S.STOPPING, "cancel_all"),
    (S.CONNECTED, I.DELETED): (S.CONNECTED, IGNORE),
    # Silent: one wait (with backoff) before the next probe.  An announcement ends it early.
    (S.SILENT, I.START): (S.SILENT, IGNORE),
    (S.SILENT, I.FOUND_NEW): (S.SILENT, "drop_found"),
    (S.SILENT, I.FOUND_SAME): (S.SILENT, IGNORE),
    (S.SILENT, I.NOT_FOUND): (S.SILENT, IGNORE),
    (S.SILENT, I.HEARD): (S.CONNECTED, "resume"),
    (S.SILENT, I.SILENCE): (S.SILENT, IGNORE),
    (S.SILENT, I.STATE_LOST): (S.RECOVERING, "wait_to_recover"),
    (S.SILENT, I.TIMER): (S.PROBING, "probe"),
    (S.SILENT, I.STOP): (S.STOPPING, "cancel_all"),
    (S.SILENT, I.DELETED): (S.SILENT, IGNORE),
    # Probing: looking for the gateway again (if it was found, not given), then one request.
    (S.PROBING, I.START): (S.PROBING, IGNORE),
    (S.PROBING, I.FOUND_NEW): (S.CONNECTED, "move"),
    (S.PROBING, I.FOUND_SAME): (S.PROBING, "send_probe"),
    (S.PROBING, I.NOT_FOUND): (S.SILENT, "back_off"),
    (S.PROBING, I.HEARD): (S.CONNECTED, "resume"),
    (S.PROBING, I.SILENCE): (S.SILENT, "back_off"),
    (S.PROBING, I.STATE_LOST): (S.RECOVERING, "wait_to_recover"),
    (S.PROBING, I.TIMER): (S.PROBING, IGNORE),
    (S.PROBING, I.STOP): (S.STOPPING, "cancel_all"),
    (S.PROBING, I.DELETED): (S.PROBING, IGNORE),
    # R19: the random wait runs to its end whatever is heard meanwhile.
    (S.RECOVERING, I.START): (S.RECOVERING, IGNORE),
    (S.RECOVERING, I.FOUND_NEW): (S.RECOVERING, "drop_found"),
    (S.RECOVERING, I.FOUND_SAME): (S.RECOVERING, IGNORE),
    (S.RECOVERING, I.NOT_FOUND): (S.RECOVERING, IGNORE),
    (S.RECOVERING, I.HEARD): (S.RECOVERING, IGNORE),
    (S.RECOVERING, I.SILENCE): (S.RECOVERING, IGNORE),
    (S.RECOVERING, I.STATE_LOST): (S.RECOVERING, "note_state_lost_again"),
    (S.RECOVERING, I.TIMER): (S.CONNECTED, "recover"),
    (S.RECOVERING, I.STOP): (S.STOPPING, "cancel_all"),
    (S.RECOVERING, I.DELETED): (S.RECOVERING, IGNORE),
    # Stopping: only the end of the deletes matters.
    (S.STOPPING, I.START): (S.STOPPING, IGNORE),
    (S.STOPPING, I.FOUND_NEW): (S.STOPPING, "drop_found"),
    (S.STOPPING, I.FOUND_SAME): (S.STOPPING, IGNORE),
    (S.STOPPING, I.NOT_FOUND): (S.STOPPING, IGNORE),
    (S.STOPPING, I.HEARD): (S.STOPPING, IGNORE),
    (S.STOPPING, I.SILENCE): (S.STOPPING, IGNORE),
    (S.STOPPING, I.STATE_LOST): (S.STOPPING, IGNORE),
    (S.STOPPING, I.TIMER): (S.STOPPING, IGNORE),
    (S.STOPPING, I.STOP): (S.STOPPING, IGNORE),
    (S.STOPPING, I.DELETED): (S.STOPPED, "close"),
    # Stopped: a service may be started again.
    (S.STOPPED, I.START): (S.FINDING, "find"),
    (S.STOPPED, I.FOUND_NEW): (S.STOPPED, "drop_found"),
    (S.STOPPED, I.FOUND_SAME): (S.STOPPED, IGNORE),
    (S.STOPPED, I.NOT_FOUND): (S.STOPPED, IGNORE),
    (S.STOPPED, I.HEARD): (S.STOPPED, IGNORE),
    (S.STOPPED, I.SILENCE): (S.STOPPED, IGNORE),
    (S.STOPPED, I.STATE_LOST): (S.STOPPED, IGNORE),
    (S.STOPPED, I.TIMER): (S.STOPPED, IGNORE),
    (S.STOPPED, I.STOP): (S.STOPPED, IGNORE),
    (S.STOPPED, I.DELETED): (S.STOPPED, IGNORE),
}


class Machine:
    """
    Runs L{TRANSITIONS}: C{feed(input)} moves to the next state, then calls the action named
    there on C{actions} (an object with a method per name).  Inputs fed from inside an action
    are queued and handled after it, so an action always runs in the state it was declared for.
    """

    def __init__(self, actions: object, on_change: Callable[[State, Input, State], None]) -> None:
        self.state = State.IDLE
        self._actions = actions
        self._on_change = on_change
        self._queue: list[Input] = []
        self._running = False

    def feed(self, event: Input) -> None:
        self._queue.append(event)
        if self._running:
            return
        self._running = True
        try:
            while self._queue:
                self._step(self._queue.pop(0))
        finally:
            self._running = False

    def _step(self, event: Input) -> None:
        before = self.state
        after, action = TRANSITIONS[(before, event)]
        self.state = after
        if after is not before:
            self._on_change(before, event, after)
        if action:
            method: Callable[[], object] = getattr(self._actions, action)
            method()
