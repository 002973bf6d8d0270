"""DuckDB schema of the task store: append-only tables, the views users query, migrations.

Every table is append-only: a run adds rows and never updates or deletes one. "Current"
state (the newest copy of a task, the newest verdict of a rollout) is computed by views
from the `seq` columns, which grow with each insert into that table.

Migrations are an ordered list of functions. `schema_version` holds one row per applied
migration; opening a store read-write applies the missing ones, each in its own
transaction. Never edit a migration that has shipped: append a new one (a view that
changes gets a `CREATE OR REPLACE VIEW` in the new migration).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import duckdb

TABLE_DOCS: dict[str, str] = {
    "schema_version": "One row per applied schema migration.",
    "runs": "One row per run (generate, verify, bench, optimize, sweep, ...): config JSON, code version, seed.",
    "run_events": "Run lifecycle events (started, resumed, finished, failed, ...), append-only.",
    "programs": "Compiled DSPy program states (JSON) with the optimizer and scores before/after.",
    "trajectories": "Explored trajectories (one row per insert; the JSON excludes the steps).",
    "steps": "One row per trajectory step: tool, arguments JSON, observation, error flag.",
    "tasks": "Tasks (one row per insert; newest insert per task_id wins): condition, parent, gold tools, full JSON.",
    "verdicts": "Verdicts, kind 'static' (task checked by gold replay) or 'rollout' (a rollout judged).",
    "rollouts": "Agent x user-simulator conversations on a task (JSON excludes the messages).",
    "messages": "One row per rollout message (OpenAI-shaped).",
    "lm_calls": "One row per LM call: role, model, tokens, cost, latency, error.",
    "trials": "Optimizer / sweep trials: study, params, value, state.",
    "finetune_runs": ("One row per finished `t2t finetune` run (status finished or failed): base model, method, "
                      "config JSON, the data selection (SQL filter and parameters, or the JSONL file), rows and "
                      "examples trained on, losses per logged step, output directory, merged model directory."),
    "superseded": ("Rows of tasks, rollouts and verdicts replaced by a newer insert with the same key "
                   "(task_id; rollout_id; static verdict: task_id; rollout verdict: task_id and rollout_id): "
                   "tbl, seq, by_seq. "
                   "The *_latest views leave these rows out."),
}

VIEW_DOCS: dict[str, str] = {
    "tasks_latest": (
        "One row per task_id (its newest insert) with its newest static verdict: "
        "verified (NULL when never verified), verify_reasons, verify_run_id."
    ),
    "pass_rate": (
        "Rollout pass rate by task condition and agent model, over the newest verdict of each "
        "rollout: rollouts, passed, pass_rate."
    ),
    "failure_reasons": (
        "Failure reasons counted by verdict kind (static/rollout), task condition and reason "
        "(newest verdict per task or rollout): n, verdicts (all verdicts of that kind and "
        "condition), share = n / verdicts."
    ),
    "tool_coverage": (
        "By task condition and tool name (from the tasks' gold actions): tasks using the tool, "
        "verified_tasks among them."
    ),
    "task_lineage": (
        "trajectory_id -> general_task_id -> task_id (the general task itself and the tasks "
        "adapted from it) -> rollout_id, agent_model, trial, pass. Trajectories that never "
        "became a task appear once with NULL task columns."
    ),
    "cost_per_verified_task": (
        "Per run: LM calls and rollouts, prompt/completion tokens and cost (lm_calls + "
        "rollouts), tasks inserted by the run and how many are verified now, tokens and cost "
        "per verified task. unpriced_calls counts calls (and rollouts) that used tokens of a "
        "model with no known price; cost is NULL while there are any."
    ),
    "rollouts_latest": (
        "One row per rollout_id (its newest insert) with the task condition and the newest "
        "rollout verdict (pass, reasons)."
    ),
    "verdicts_latest": ("The current verdicts: the newest static verdict per task_id and the newest "
                        "rollout verdict per (task_id, rollout_id)."),
    "runs_status": "One row per run with its newest lifecycle event (status) and when it happened.",
}

# The views a user should look at first (benchmarks and `t2t` list these).
STANDARD_VIEWS: tuple[str, ...] = (
    "tasks_latest",
    "pass_rate",
    "failure_reasons",
    "tool_coverage",
    "task_lineage",
    "cost_per_verified_task",
)


def _m1_tables(cur: duckdb.DuckDBPyConnection) -> None:
    cur.execute("""
        CREATE TABLE runs (
            run_id        VARCHAR NOT NULL,
            kind          VARCHAR NOT NULL,
            config        JSON,
            code_version  VARCHAR,
            seed          BIGINT,
            started_at    TIMESTAMP NOT NULL
        );
        CREATE TABLE run_events (
            run_id   VARCHAR NOT NULL,
            status   VARCHAR NOT NULL,
            details  JSON,
            created_at  TIMESTAMP NOT NULL
        );
        CREATE TABLE programs (
            name          VARCHAR NOT NULL,
            program       VARCHAR NOT NULL,
            state         JSON,
            optimizer     VARCHAR,
            score_before  DOUBLE,
            score_after   DOUBLE,
            run_id        VARCHAR,
            created_at    TIMESTAMP NOT NULL,
            seq           BIGINT NOT NULL
        );
        CREATE TABLE trajectories (
            trajectory_id       VARCHAR NOT NULL,
            run_id              VARCHAR NOT NULL,
            domain              VARCHAR,
            source              VARCHAR,
            seed_entity         VARCHAR,
            goal                VARCHAR,
            initial_state_hash  VARCHAR,
            end_state_hash      VARCHAR,
            n_steps             INTEGER NOT NULL,
            json                JSON,
            created_at          TIMESTAMP NOT NULL,
            seq                 BIGINT NOT NULL
        );
        CREATE TABLE steps (
            trajectory_id  VARCHAR NOT NULL,
            run_id         VARCHAR NOT NULL,
            traj_seq       BIGINT NOT NULL,
            idx            INTEGER NOT NULL,
            tool           VARCHAR NOT NULL,
            arguments      JSON,
            observation    VARCHAR,
            error          BOOLEAN NOT NULL,
            call_id        VARCHAR
        );
        CREATE TABLE tasks (
            task_id         VARCHAR NOT NULL,
            run_id          VARCHAR NOT NULL,
            domain          VARCHAR,
            condition       VARCHAR,
            parent_task_id  VARCHAR,
            trajectory_id   VARCHAR,
            source          VARCHAR,
            gold_tools      VARCHAR[],
            json            JSON NOT NULL,
            created_at      TIMESTAMP NOT NULL,
            seq             BIGINT NOT NULL
        );
        CREATE TABLE verdicts (
            run_id      VARCHAR NOT NULL,
            kind        VARCHAR NOT NULL,
            task_id     VARCHAR NOT NULL,
            rollout_id  VARCHAR,
            pass        BOOLEAN NOT NULL,
            reasons     VARCHAR[],
            details     VARCHAR[],
            created_at  TIMESTAMP NOT NULL,
            seq         BIGINT NOT NULL
        );
        CREATE TABLE rollouts (
            rollout_id         VARCHAR NOT NULL,
            run_id             VARCHAR NOT NULL,
            task_id            VARCHAR NOT NULL,
            agent_model        VARCHAR,
            user_model         VARCHAR,
            trial              INTEGER NOT NULL,
            termination        VARCHAR,
            error              VARCHAR,
            end_state_hash     VARCHAR,
            prompt_tokens      BIGINT,
            completion_tokens  BIGINT,
            cost               DOUBLE,
            n_messages         INTEGER,
            n_steps            INTEGER,
            json               JSON,
            created_at         TIMESTAMP NOT NULL,
            seq                BIGINT NOT NULL
        );
        CREATE TABLE messages (
            rollout_id    VARCHAR NOT NULL,
            run_id        VARCHAR NOT NULL,
            rollout_seq   BIGINT NOT NULL,
            idx           INTEGER NOT NULL,
            role          VARCHAR NOT NULL,
            content       VARCHAR,
            tool_calls    JSON,
            tool_call_id  VARCHAR
        );
        CREATE TABLE lm_calls (
            run_id             VARCHAR NOT NULL,
            role               VARCHAR,
            model              VARCHAR,
            prompt_tokens      BIGINT,
            completion_tokens  BIGINT,
            cost               DOUBLE,
            latency_s          DOUBLE,
            error              VARCHAR,
            created_at         TIMESTAMP NOT NULL
        );
        CREATE TABLE superseded (
            tbl         VARCHAR NOT NULL,
            seq         BIGINT NOT NULL,
            by_seq      BIGINT NOT NULL,
            created_at  TIMESTAMP NOT NULL
        );
        CREATE TABLE trials (
            run_id      VARCHAR NOT NULL,
            study       VARCHAR NOT NULL,
            number      INTEGER NOT NULL,
            params      JSON,
            value       DOUBLE,
            state       VARCHAR,
            user_attrs  JSON,
            created_at  TIMESTAMP NOT NULL
        );
    """)
    for name, doc in TABLE_DOCS.items():
        if name not in ("schema_version", *_LATER_TABLES):
            cur.execute(f"COMMENT ON TABLE {name} IS {_sql_str(doc)}")


# "Current" rows are those no newer insert with the same key has replaced. Each write of
# tasks, rollouts or verdicts records the rows it replaces in `superseded` (append-only),
# so the views need a cheap anti-join against that small table instead of a GROUP BY over
# every key of a large table.
_CUR_TASKS = "SELECT * FROM tasks WHERE seq NOT IN (SELECT seq FROM superseded WHERE tbl = 'tasks')"
_CUR_ROLLOUTS = "SELECT * FROM rollouts WHERE seq NOT IN (SELECT seq FROM superseded WHERE tbl = 'rollouts')"

_VIEWS_V1: dict[str, str] = {
    "verdicts_latest": """
        SELECT * FROM verdicts WHERE seq NOT IN (SELECT seq FROM superseded WHERE tbl = 'verdicts')
    """,
    "tasks_latest": f"""
        SELECT t.task_id, t.run_id, t.domain, t.condition, t.parent_task_id, t.trajectory_id,
               t.source, t.gold_tools,
               sv.pass AS verified, sv.reasons AS verify_reasons, sv.run_id AS verify_run_id,
               t.created_at, t.seq, t.json
        FROM ({_CUR_TASKS}) t
        LEFT JOIN (SELECT task_id, pass, reasons, run_id FROM verdicts_latest WHERE kind = 'static') sv
          ON sv.task_id = t.task_id
    """,
    "rollouts_latest": f"""
        SELECT r.rollout_id, r.run_id, r.task_id, tc.condition, r.agent_model, r.user_model,
               r.trial, r.termination, r.error, r.end_state_hash, r.prompt_tokens,
               r.completion_tokens, r.cost, r.n_messages, r.n_steps,
               rv.pass, rv.reasons, r.created_at, r.seq, r.json
        FROM ({_CUR_ROLLOUTS}) r
        LEFT JOIN (SELECT task_id, rollout_id, pass, reasons FROM verdicts_latest
                   WHERE kind = 'rollout' AND rollout_id IS NOT NULL) rv
          ON rv.rollout_id = r.rollout_id AND rv.task_id = r.task_id
        LEFT JOIN (SELECT task_id, condition FROM ({_CUR_TASKS})) tc ON tc.task_id = r.task_id
    """,
    "pass_rate": """
        SELECT condition, agent_model,
               count(*) AS rollouts,
               count(*) FILTER (WHERE pass) AS passed,
               count(*) FILTER (WHERE pass) / count(*) AS pass_rate
        FROM rollouts_latest
        WHERE pass IS NOT NULL
        GROUP BY condition, agent_model
        ORDER BY condition, agent_model
    """,
    "failure_reasons": f"""
        WITH v AS (
            SELECT v.kind, tc.condition, v.reasons
            FROM verdicts_latest v
            LEFT JOIN (SELECT task_id, condition FROM ({_CUR_TASKS})) tc ON tc.task_id = v.task_id
        ), totals AS (
            SELECT kind, condition, count(*) AS verdicts FROM v GROUP BY kind, condition
        ), counts AS (
            SELECT kind, condition, reason, count(*) AS n
            FROM (SELECT kind, condition, unnest(reasons) AS reason FROM v)
            GROUP BY kind, condition, reason
        )
        SELECT c.kind, c.condition, c.reason, c.n, t.verdicts, c.n / t.verdicts AS share
        FROM counts c
        JOIN totals t ON t.kind = c.kind AND t.condition IS NOT DISTINCT FROM c.condition
        ORDER BY c.kind, c.condition, c.n DESC, c.reason
    """,
    "tool_coverage": """
        SELECT condition, tool,
               count(*) AS tasks,
               count(*) FILTER (WHERE verified) AS verified_tasks
        FROM (SELECT condition, verified, unnest(list_distinct(gold_tools)) AS tool FROM tasks_latest)
        GROUP BY condition, tool
        ORDER BY condition, tool
    """,
    "task_lineage": f"""
        WITH t AS MATERIALIZED (
            SELECT task_id, condition, parent_task_id, trajectory_id, verified FROM tasks_latest
        ), r AS (
            SELECT r.rollout_id, r.task_id, r.agent_model, r.trial, rv.pass
            FROM ({_CUR_ROLLOUTS}) r
            LEFT JOIN (SELECT task_id, rollout_id, pass FROM verdicts_latest
                       WHERE kind = 'rollout' AND rollout_id IS NOT NULL) rv
              ON rv.rollout_id = r.rollout_id AND rv.task_id = r.task_id
        )
        SELECT coalesce(p.trajectory_id, t.trajectory_id) AS trajectory_id,
               coalesce(t.parent_task_id, t.task_id) AS general_task_id,
               t.task_id, t.condition, t.verified,
               r.rollout_id, r.agent_model, r.trial, r.pass
        FROM t
        LEFT JOIN (SELECT task_id, trajectory_id FROM t) AS p ON p.task_id = t.parent_task_id
        LEFT JOIN r ON r.task_id = t.task_id
        UNION ALL
        SELECT trajectory_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
        FROM (SELECT DISTINCT trajectory_id FROM trajectories)
        WHERE trajectory_id NOT IN (SELECT trajectory_id FROM tasks WHERE trajectory_id IS NOT NULL)
    """,
    "cost_per_verified_task": """
        WITH r AS (
            SELECT * FROM runs
            QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY started_at) = 1
        ), lm AS (
            SELECT run_id, count(*) AS lm_calls, sum(prompt_tokens) AS pt,
                   sum(completion_tokens) AS ct, sum(cost) AS cost,
                   count(*) FILTER (WHERE cost IS NULL AND prompt_tokens + completion_tokens > 0) AS unpriced
            FROM lm_calls GROUP BY run_id
        ), ro AS (
            SELECT run_id, count(*) AS rollouts, sum(prompt_tokens) AS pt,
                   sum(completion_tokens) AS ct, sum(cost) AS cost,
                   count(*) FILTER (WHERE cost IS NULL AND prompt_tokens + completion_tokens > 0) AS unpriced
            FROM rollouts GROUP BY run_id
        ), tk AS (
            SELECT run_id, count(*) AS tasks, count(*) FILTER (WHERE verified) AS verified_tasks
            FROM tasks_latest GROUP BY run_id
        ), s AS (
            SELECT r.run_id, r.kind, r.started_at,
                   coalesce(lm.lm_calls, 0) AS lm_calls,
                   coalesce(ro.rollouts, 0) AS rollouts,
                   (coalesce(lm.pt, 0) + coalesce(ro.pt, 0))::BIGINT AS prompt_tokens,
                   (coalesce(lm.ct, 0) + coalesce(ro.ct, 0))::BIGINT AS completion_tokens,
                   -- a sum over calls of unknown price would be a guess: no cost, and how many
                   (coalesce(lm.unpriced, 0) + coalesce(ro.unpriced, 0))::BIGINT AS unpriced_calls,
                   CASE WHEN coalesce(lm.unpriced, 0) + coalesce(ro.unpriced, 0) = 0
                        THEN coalesce(lm.cost, 0) + coalesce(ro.cost, 0) END AS cost,
                   coalesce(tk.tasks, 0) AS tasks,
                   coalesce(tk.verified_tasks, 0) AS verified_tasks
            FROM r
            LEFT JOIN lm ON lm.run_id = r.run_id
            LEFT JOIN ro ON ro.run_id = r.run_id
            LEFT JOIN tk ON tk.run_id = r.run_id
        )
        SELECT *,
               (prompt_tokens + completion_tokens) / nullif(verified_tasks, 0)
                   AS tokens_per_verified_task,
               cost / nullif(verified_tasks, 0) AS cost_per_verified_task
        FROM s
        ORDER BY started_at, run_id
    """,
    "runs_status": """
        WITH e AS (
            SELECT run_id, arg_max(status, created_at) AS status, max(created_at) AS status_at
            FROM run_events GROUP BY run_id
        )
        SELECT r.run_id, r.kind, r.code_version, r.seed, r.started_at, e.status, e.status_at,
               r.config
        FROM runs r LEFT JOIN e ON e.run_id = r.run_id
        ORDER BY r.started_at, r.run_id
    """,
}

# The key under which a newer insert replaces an older row (see `superseded`), and a plain
# column every row of one key shares (to narrow the scan). A static verdict is about its
# task; a rollout verdict about its (task, rollout).
SUPERSEDE_KEYS: dict[str, tuple[str, str]] = {
    "tasks": ("task_id", "task_id"),
    "rollouts": ("rollout_id", "rollout_id"),
    "verdicts": ("CASE WHEN kind = 'static' THEN 's:' || task_id "
                 "ELSE 'r:' || task_id || chr(31) || coalesce(rollout_id, '') END", "task_id"),
}


# The tables numbered by `seq` (the store reads their next numbers together).
SEQ_TABLES = ("trajectories", "tasks", "verdicts", "rollouts")


def record_superseded(cur: duckdb.DuckDBPyConnection, table: str, first_seq: int, now: datetime) -> None:
    """After inserting rows with seq >= first_seq into `table` (same transaction, write lock
    held), record every older row of the same key, and every earlier row of the batch with a
    key repeated in it, as superseded."""
    key, col = SUPERSEDE_KEYS[table]
    cur.execute(
        f"""
        INSERT INTO superseded (tbl, seq, by_seq, created_at)
        SELECT ?, o.seq, n.s, ?
        FROM (SELECT seq, {key} AS k FROM {table}
              WHERE {col} IN (SELECT {col} FROM {table} WHERE seq >= ?)) o
        JOIN (SELECT {key} AS k, max(seq) AS s FROM {table} WHERE seq >= ? GROUP BY k) n ON o.k = n.k
        WHERE o.seq < n.s AND o.seq NOT IN (SELECT seq FROM superseded WHERE tbl = ?)
        """,
        [table, now, first_seq, first_seq, table],
    ).fetchall()


def _m2_views(cur: duckdb.DuckDBPyConnection) -> None:
    for name, sql in _VIEWS_V1.items():
        cur.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        cur.execute(f"COMMENT ON VIEW {name} IS {_sql_str(VIEW_DOCS[name])}")


def _m3_finetune_runs(cur: duckdb.DuckDBPyConnection) -> None:
    cur.execute("""
        CREATE TABLE finetune_runs (
            run_id        VARCHAR NOT NULL,
            base          VARCHAR NOT NULL,
            method        VARCHAR NOT NULL,
            config        JSON,
            data_source   VARCHAR NOT NULL,
            data_sql      VARCHAR,
            data_params   JSON,
            n_rows        INTEGER NOT NULL,
            n_examples    INTEGER NOT NULL,
            losses        JSON,
            first_loss    DOUBLE,
            final_loss    DOUBLE,
            output        VARCHAR,
            merged_output VARCHAR,
            status        VARCHAR NOT NULL,
            error         VARCHAR,
            wall_s        DOUBLE,
            created_at    TIMESTAMP NOT NULL
        )
    """)
    cur.execute(f"COMMENT ON TABLE finetune_runs IS {_sql_str(TABLE_DOCS['finetune_runs'])}")


# tables made by migrations after the first (the first comments every other table)
_LATER_TABLES = ("finetune_runs",)

Migration = tuple[int, str, Callable[[duckdb.DuckDBPyConnection], None]]

MIGRATIONS: list[Migration] = [
    (1, "tables", _m1_tables),
    (2, "views", _m2_views),
    (3, "finetune_runs", _m3_finetune_runs),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def current_version(cur: duckdb.DuckDBPyConnection) -> int | None:
    """The applied schema version, or None when the database has no store schema."""
    exists = cur.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return None
    v = cur.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(v) if v is not None else 0


def migrate(cur: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply the missing migrations, each in one transaction. Returns the versions applied."""
    cur.execute("""
        CREATE TABLE IF NOT EXISTS schema_version (
            version     INTEGER NOT NULL,
            name        VARCHAR NOT NULL,
            applied_at  TIMESTAMP NOT NULL
        )
    """)
    have = current_version(cur) or 0
    applied: list[int] = []
    for version, name, fn in MIGRATIONS:
        if version <= have:
            continue
        cur.begin()
        try:
            fn(cur)
            cur.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, name, utcnow()]).fetchall()
            cur.commit()
        except BaseException:
            cur.rollback()
            raise
        applied.append(version)
    return applied


def utcnow() -> datetime:
    """Naive UTC timestamp (the TIMESTAMP columns hold UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
