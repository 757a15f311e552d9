"""An instance's lifecycle: the only code that writes its status, lease and dispatch columns.

`status` (with `status_before_pause` and `paused_reason`, which change with it),
`lease_owner`, `lease_expires_at`, `generation`, `next_run_at` and `dispatched_at` are
written here and nowhere else (tests/execution/test_lifecycle.py checks the source).
The rest of the engine asks, with verbs that name the rules:

    leases   claim, renew, release, retry_later               take and give back the lease
    due      make_due, make_due_at, fill, sweep, unsend, kept  when it runs, and who is sent it
    states   start_running, suspend_running, finish, pause,    its status
             hold, unpause, repause, terminate, restart
    records  record_under_lease, finish_in_one_statement       the lease's part of an outcome
    notices  announce, listened                                the webhook deliveries a status
                                                               change owes (in its transaction)

Glossary (one name per concept, in the whole engine):

activation  One run of an instance's code in the sandbox, replaying its recorded
            history and running at most one new step; what engine.advance does per
            claim, or several times under one kept lease.
lease       The right to run an instance now: `lease_owner` (the activation's token)
            until `lease_expires_at`. Taken by a claim, renewed while the sandbox runs,
            given back when the outcome is recorded; a dead worker's lease lapses.
generation  A counter bumped by pause, terminate and restart: an outcome recorded
            under an older generation is dropped, even if its token still matched.
hold        A staff decision that keeps an instance from running (its tenant
            suspended, its version not approved): the instance is paused for it, with
            the reason, and only lifting the decision resumes it (states.hold).
kept        An instance the worker goes on with itself after recording a step: its
            lease renewed, counted as sent, no message through the broker (due.kept).
settle      Resolving the step an instance is suspended on when it is claimed: a
            sleep that is over, an event that arrived, a child that ended, a wait that
            timed out (engine.settle).
due         Active, `next_run_at` passed (or its lease lapsed), and neither held nor
            sent: fill sends it to a worker, at most the tenant's cap at a time.

Invariants (what the chaos run, bench/chaos.py, checks at its end, after killed workers
and restarted Redis and PostgreSQL):

1. Nothing lost: every active instance is either held by a live lease, sent (until
   the redispatch delay passes), or due at `next_run_at`; the clock's sweep sends what
   is due, so every instance ends. A lost message or a dead worker only delays it.
2. Nothing recorded twice: an outcome is recorded only by the UPDATE or row lock that
   finds the activation's token and generation still on the row, in the transaction
   that writes the step; so a completed step is never run or recorded again, and step
   indexes stay contiguous.
3. One worker at a time: a lease is taken only when it is free or lapsed, by one
   conditional UPDATE, and the tenant's row is locked while its leases are counted,
   so no tenant runs more activations than its cap.
4. Events without a gap: every progress event's sequence number is reserved on the
   instance row by the statement that stores it, so they run 1..N.
5. Held means never run: a claim never takes the lease of an instance whose tenant is
   suspended or whose version is not approved; it pauses it instead (hold).

Import order, lowest first (no module imports one to its right):
lib <- webhooks <- models <- twins, dispatch, activation, errors, progress <- retention
<- schemas <- lifecycle (notices <- due <- states <- known_steps <- leases <- records)
<- quotas <- workflows <- kinds <- fast_records <- outcomes, redaction <- engine <- tasks;
history <- runs (restart and rerun, above kinds).
"""
