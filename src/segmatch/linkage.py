"""Record linkage through Splink on DuckDB: the one module that reaches the entity-resolution
library. It normalises each column by its role, chooses blocking rules under a pair budget and
comparisons from the roles, fits a Fellegi–Sunter model by EM (no labels), and scores pairs
with per-field match weights. What to do with the pairs (threshold, entities, ids) is
engine-neutral code in :mod:`segmatch.entities`.

Example:
    >>> table = pa.table({"id": ["1"], "nome": ["MARIA DAS GRAÇAS  Souza"]})  # doctest: +SKIP
    >>> normalised(table, id_column="id", roles={"nome": "surname"})["nome"][0]  # doctest: +SKIP
    'maria gracas souza'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segmatch.config import IdentityRole
from segmatch.errors import LinkageUnavailableError

logger = logging.getLogger(__name__)

Role = IdentityRole
LinkType = Literal["link_only", "link_and_dedupe", "dedupe_only"]
#: Name particles left out before names are compared (Portuguese, Spanish, Dutch, English).
PARTICLES = ("da", "de", "do", "das", "dos", "e", "del", "la", "van", "von", "der", "the", "of")
#: Words of a column name that say its role, checked in this order.
ROLE_WORDS: tuple[tuple[Role, tuple[str, ...]], ...] = (
    ("cpf", ("cpf",)),
    ("national_id", ("ssn", "soc_sec_id", "national_id", "nin", "rg", "passport", "document")),
    ("email", ("email", "e_mail", "mail")),
    ("phone", ("phone", "telefone", "celular", "mobile", "tel", "fone")),
    ("birth_date", ("dob", "date_of_birth", "birth_date", "birthdate", "nascimento", "dt_nasc")),
    ("first_name", ("first_name", "given_name", "forename", "firstname", "primeiro_nome")),
    ("surname", ("surname", "last_name", "family_name", "lastname", "sobrenome")),
    ("full_name", ("name", "full_name", "nome", "nome_completo", "customer_name")),
    ("postcode", ("postcode", "zip", "zipcode", "cep", "postal_code")),
    ("city", ("city", "cidade", "suburb", "town", "municipio")),
    ("address", ("address", "endereco", "street", "address_1", "logradouro")),
)
PAIRS_SCORED_ABOVE = 0.001
#: The blocking key columns added to the compared records start with this.
BLOCK_KEY_PREFIX = "__block_"
#: A rule making more comparisons than this per record (and than :data:`SMALL_RULE`) is too
#: broad to pay: on 20,000 records a first name alone made 3.8 million pairs, half the time
#: of the whole link, for no match the narrower rules had missed.
PAIRS_PER_RECORD = 30
SMALL_RULE = 50_000
#: Pairs drawn to estimate the u probabilities: per record, and at most.
U_PAIRS_PER_RECORD = 20
MAX_U_PAIRS = 2_000_000


@dataclass(frozen=True)
class BlockingRule:
    """One blocking rule: records agreeing on every column of ``columns`` are compared.

    ``pairs`` is how many comparisons it makes once keys shared by more than the block cap are
    left out (``capped_keys`` of them, holding ``capped_records``)."""

    columns: tuple[str, ...]
    pairs: int
    largest_block: int
    capped_keys: int = 0
    capped_records: int = 0
    used: bool = True
    why_not: str | None = None

    @property
    def key(self) -> str:
        return BLOCK_KEY_PREFIX + "_".join(self.columns)


@dataclass(frozen=True)
class Linked:
    """The scored pairs and the fitted model that scored them."""

    pairs: pa.Table
    #: Splink's settings with the trained m and u probabilities (JSON-compatible).
    model: dict[str, Any]
    blocking: tuple[BlockingRule, ...]
    #: The records as compared (normalised), one row per record.
    records: pa.Table


def check_installed() -> None:
    """Stop, naming the extra to install, when Splink or DuckDB is missing (before a run's
    first stage, not in its identity stage)."""
    try:
        import duckdb  # noqa: F401, PLC0415
        import splink  # noqa: F401, PLC0415
    except ImportError as error:
        raise LinkageUnavailableError(
            f"the identity step needs Splink and DuckDB ({error.name} is not installed): "
            "pip install 'segmatch[identity]'"
        ) from error


def roles_from_names(columns: Sequence[str]) -> dict[str, Role]:
    """Roles for the columns whose names say one (``given_name`` → first_name, ``cpf``…)."""
    found: dict[str, Role] = {}
    taken: set[Role] = set()
    for column in columns:
        name = "_".join(
            w for w in "".join(c if c.isalnum() else " " for c in column.casefold()).split()
        )
        for role, words in ROLE_WORDS:
            if role in taken and role not in ("address", "text"):
                continue
            if name in words or any(
                name.startswith(f"{w}_") or name.endswith(f"_{w}") for w in words
            ):
                found[column] = role
                taken.add(role)
                break
    return found


def normalised(records: pa.Table, *, id_column: str, roles: Mapping[str, Role]) -> pa.Table:
    """The records' id and each role column normalised for comparison (``full_name`` also
    gives its first and last words as ``<column>__first`` and ``<column>__last``)."""
    import duckdb  # noqa: PLC0415 -- the linkage extra loads on demand

    connection = duckdb.connect()
    connection.register("records", records)
    selected = [f'CAST("{id_column}" AS VARCHAR) AS "{id_column}"']
    for column, role in roles.items():
        value = f'CAST("{column}" AS VARCHAR)'
        selected.append(f'{_normalise_sql(value, role)} AS "{column}"')
        if role == "full_name":
            selected.append(
                f"split_part({_normalise_sql(value, role)}, ' ', 1) AS \"{column}__first\""
            )
            selected.append(
                f"list_last(string_split({_normalise_sql(value, role)}, ' ')) AS \"{column}__last\""
            )
    table = connection.sql(f"SELECT {', '.join(selected)} FROM records").arrow()
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    for column, role in roles.items():
        if role == "cpf":
            index = table.column_names.index(column)
            table = table.set_column(index, column, valid_cpf(table.column(column)))
    return table


def _normalise_sql(value: str, role: Role) -> str:
    text = f"lower(strip_accents(trim({value})))"
    words = (
        f"trim(regexp_replace(regexp_replace({text}, '[^a-z0-9]+', ' ', 'g'), '\\s+', ' ', 'g'))"
    )
    if role in ("full_name", "first_name", "surname"):
        particles = "|".join(PARTICLES)
        spaced = f"' ' || {words} || ' '"
        # Twice: a particle beside another (de la, van der) shares its space with it.
        once = f"regexp_replace({spaced}, ' ({particles}) ', ' ', 'g')"
        twice = f"regexp_replace({once}, ' ({particles}) ', ' ', 'g')"
        return f"nullif(trim(regexp_replace({twice}, '\\s+', ' ', 'g')), '')"
    if role in ("city", "address", "text"):
        return f"nullif({words}, '')"
    if role == "category":
        return f"nullif(lower(trim({value})), '')"
    if role == "email":
        return f"nullif(lower(trim({value})), '')"
    if role in ("postcode", "cpf"):
        return f"nullif(regexp_replace({value}, '[^0-9]', '', 'g'), '')"
    if role == "national_id":
        return f"nullif(upper(regexp_replace({value}, '[^0-9A-Za-z]', '', 'g')), '')"
    if role == "phone":
        digits = f"ltrim(regexp_replace({value}, '[^0-9]', '', 'g'), '0')"
        # A Brazilian number written without its country code (DDD + 8 or 9 digits) gets it.
        local = f"length({digits}) IN (10, 11)"
        return f"nullif(CASE WHEN {local} THEN '55' || {digits} ELSE {digits} END, '')"
    if role == "birth_date":
        text_value = f"trim({value})"
        forms = ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y", "%d-%m-%Y", "%d.%m.%Y", "%Y/%m/%d")
        parsed = ", ".join(f"try_strptime({text_value}, '{form}')" for form in forms)
        return f"strftime(CAST(coalesce({parsed}) AS DATE), '%Y-%m-%d')"
    raise ValueError(f"no normalisation for role {role!r}")


def valid_cpf(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """CPFs (digits only) whose two check digits are right; None for any other value, so an
    invalid CPF is never evidence of a match."""
    texts = values.to_pylist()
    digits = np.zeros((len(texts), 11), dtype=np.int64)
    shaped = np.array([t is not None and len(t) == 11 and t.isdigit() for t in texts])
    for i in np.flatnonzero(shaped):
        digits[i] = [int(c) for c in texts[i]]
    first = (digits[:, :9] * np.arange(10, 1, -1)).sum(axis=1) * 10 % 11 % 10
    second = (digits[:, :10] * np.arange(11, 1, -1)).sum(axis=1) * 10 % 11 % 10
    repeated = (digits == digits[:, :1]).all(axis=1)  # 111.111.111-11 passes the sums
    ok = shaped & (first == digits[:, 9]) & (second == digits[:, 10]) & ~repeated
    return pa.array([t if good else None for t, good in zip(texts, ok, strict=True)], pa.string())


def _comparison(column: str, role: Role) -> Any:
    import splink.comparison_library as cl  # noqa: PLC0415

    if role in ("first_name", "surname", "full_name"):
        return cl.NameComparison(column).configure(term_frequency_adjustments=True)
    if role == "birth_date":
        return cl.DateOfBirthComparison(column, input_is_string=True, datetime_format="%Y-%m-%d")
    if role == "email":
        return cl.EmailComparison(column)
    if role in ("phone", "cpf", "national_id", "postcode"):
        return cl.LevenshteinAtThresholds(column, [1, 2])
    if role == "city":
        return cl.ExactMatch(column).configure(term_frequency_adjustments=True)
    if role == "category":
        return cl.ExactMatch(column)
    return cl.JaroWinklerAtThresholds(column, [0.92, 0.8])


def candidate_rules(roles: Mapping[str, Role]) -> list[tuple[str, ...]]:
    """Blocking rules worth trying, strongest first: each identifier alone, then pairs of a
    name with a date, a place or another name."""
    by_role: dict[Role, list[str]] = {}
    for column, role in roles.items():
        by_role.setdefault(role, []).append(column)
    names: list[str] = []
    for column in by_role.get("full_name", []):
        names += [f"{column}__first", f"{column}__last"]
    names += by_role.get("first_name", []) + by_role.get("surname", [])
    others = [
        c for role in ("birth_date", "postcode", "city", "phone") for c in by_role.get(role, [])
    ]
    rules: list[tuple[str, ...]] = [
        (c,) for role in ("cpf", "national_id", "email", "phone") for c in by_role.get(role, [])
    ]
    rules += [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    rules += [(n, o) for n in names for o in others if o not in names]
    if "birth_date" in by_role:
        rules += [(d, o) for d in by_role["birth_date"] for o in others if o != d]
    # Last, single fields: they catch records whose names are misspelt, where the budget
    # allows (keys shared by too many records are capped, so a common surname stays out).
    rules += [(c,) for c in [*by_role.get("birth_date", []), *names, *others]]
    return list(dict.fromkeys(rules))


def choose_blocking(
    records: pa.Table,
    *,
    roles: Mapping[str, Role],
    max_pairs: int,
    max_block: int,
) -> tuple[pa.Table, tuple[BlockingRule, ...]]:
    """The records with one key column per chosen rule, and every rule tried: rules are taken
    strongest first while their comparisons fit the pair budget; a key shared by more than
    ``max_block`` records is left out of its rule (and counted), so no block can explode."""
    import duckdb  # noqa: PLC0415

    connection = duckdb.connect()
    connection.register("records", records)
    chosen: list[BlockingRule] = []
    budget = max_pairs
    broad = max(SMALL_RULE, PAIRS_PER_RECORD * records.num_rows)
    for columns in candidate_rules(roles):
        key = " || '|' || ".join(f'"{c}"' for c in columns)
        present = " AND ".join(f'"{c}" IS NOT NULL' for c in columns)
        counts = connection.sql(
            f"SELECT {key} AS key, count(*) AS n FROM records WHERE {present} GROUP BY key"
        ).arrow()
        if isinstance(counts, pa.RecordBatchReader):
            counts = counts.read_all()
        sizes = counts.column("n").to_numpy().astype(np.int64)
        kept = sizes <= max_block
        pairs = int((sizes[kept] * (sizes[kept] - 1) // 2).sum())
        rule = BlockingRule(
            columns,
            pairs,
            int(sizes[kept].max()) if kept.any() else 0,
            capped_keys=int((~kept).sum()),
            capped_records=int(sizes[~kept].sum()),
        )
        if pairs == 0:
            chosen.append(_unused(rule, "no two records share a key"))
        elif pairs > broad:
            chosen.append(
                _unused(
                    rule,
                    f"too broad: {pairs:,} comparisons, over {broad:,} "
                    f"({PAIRS_PER_RECORD} a record)",
                )
            )
        elif pairs > budget:
            chosen.append(_unused(rule, f"{pairs:,} comparisons, over the {budget:,} left"))
        else:
            budget -= pairs
            chosen.append(rule)
            capped = counts.filter(pc.invert(pa.array(kept))).column("key")
            records = _with_key(records, rule, capped)
    if not any(rule.used for rule in chosen):
        raise ValueError(
            "no blocking rule fits identity.max_pairs: "
            + "; ".join(f"{'+'.join(r.columns)}: {r.why_not}" for r in chosen)
        )
    return records, tuple(chosen)


def _unused(rule: BlockingRule, why: str) -> BlockingRule:
    return BlockingRule(
        rule.columns,
        rule.pairs,
        rule.largest_block,
        rule.capped_keys,
        rule.capped_records,
        False,
        why,
    )


def _with_key(records: pa.Table, rule: BlockingRule, capped: pa.ChunkedArray) -> pa.Table:
    parts = [records.column(c) for c in rule.columns]
    joined = pc.binary_join_element_wise(*parts, "|")
    joined = pc.if_else(pc.is_in(joined, value_set=capped.combine_chunks()), None, joined)
    return records.append_column(rule.key, joined)


def link(
    records: pa.Table,
    *,
    id_column: str,
    roles: Mapping[str, Role],
    max_pairs: int,
    max_block: int,
    seed: int,
    source_column: str | None = None,
    link_only: bool = False,
) -> Linked:
    """Normalise, block, fit by EM and score every blocked pair (those above a probability of
    :data:`PAIRS_SCORED_ABOVE`), with each compared column's match weight."""
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on  # noqa: PLC0415

    compared = normalised(records, id_column=id_column, roles=roles)
    if source_column is not None:
        compared = compared.append_column(
            source_column, records.column(source_column).cast(pa.string())
        )
    keyed, rules = choose_blocking(
        compared,
        roles=roles,
        max_pairs=max_pairs,
        max_block=max_block,
    )
    used = [rule for rule in rules if rule.used]
    link_type: LinkType = (
        "link_only" if link_only else ("link_and_dedupe" if source_column else "dedupe_only")
    )
    settings = SettingsCreator(
        link_type=link_type,
        unique_id_column_name=id_column,
        source_dataset_column_name=source_column or "source_dataset",
        comparisons=[_comparison(column, role) for column, role in roles.items()],
        blocking_rules_to_generate_predictions=[block_on(rule.key) for rule in used],
        retain_intermediate_calculation_columns=True,
        retain_matching_columns=True,
    )
    db = DuckDBAPI()
    tables = (
        [db.register(part) for part in _by_source(keyed, source_column)]
        if source_column
        else db.register(keyed)
    )
    linker = Linker(tables, settings, log_level=logging.WARNING)
    deterministic: list[Any] = [block_on(rule.key) for rule in used[:1]]
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    # One sample, not chunks drawn until every level is seen 100 times: agreement on an email
    # or a CPF is rare among random pairs, and the chunks ran 60 queries for 5,000 records.
    linker.training.estimate_u_using_random_sampling(
        max_pairs=min(MAX_U_PAIRS, max(100_000, U_PAIRS_PER_RECORD * len(keyed))),
        seed=seed,
        min_count_per_level=None,
        num_chunks=1,
    )
    proportion = min(1.0, 200_000 / max(len(keyed), 1))
    for rule in _training_rules(used, roles):
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(rule.key), record_sample_proportion=proportion
        )
    pairs = linker.inference.predict(
        threshold_match_probability=PAIRS_SCORED_ABOVE
    ).as_pyarrow_table()
    model = linker.misc.save_model_to_json()
    prior = float(model["probability_two_random_records_match"])
    return Linked(
        pairs=_explained(pairs, id_column=id_column, roles=roles, prior=prior),
        model=model,
        blocking=rules,
        records=keyed,
    )


def link_new(
    known: pa.Table,
    new: pa.Table,
    *,
    id_column: str,
    roles: Mapping[str, Role],
    model: Mapping[str, Any],
    rules: Sequence[Sequence[str]],
    max_block: int,
) -> tuple[pa.Table, pa.Table]:
    """Score new records with a trained model, without refitting: against the known records
    (as :func:`link` normalised them, keyed by id) and among themselves. Returns both sets of
    pairs with per-field weights (known record on the left). Keys shared by more than
    ``max_block`` known records are left out, as in training."""
    import duckdb  # noqa: PLC0415
    from splink import DuckDBAPI, Linker, block_on  # noqa: PLC0415

    compared = normalised(new, id_column=id_column, roles=roles)
    # As stored (Delta reads large strings): the key kernels want one string type.
    known = known.cast(pa.schema([pa.field(name, pa.string()) for name in known.column_names]))
    blocking = [BlockingRule(tuple(columns), 0, 0) for columns in rules]
    connection = duckdb.connect()
    connection.register("known", known)
    for rule in blocking:
        key = " || '|' || ".join(f'"{c}"' for c in rule.columns)
        capped = connection.sql(
            f"SELECT {key} AS key FROM known GROUP BY key HAVING count(*) > {int(max_block)}"
        ).arrow()
        if isinstance(capped, pa.RecordBatchReader):
            capped = capped.read_all()
        keys = capped.column("key")
        known = _with_key(known, rule, keys)
        compared = _with_key(compared, rule, keys)
    settings = {**model, "link_type": "dedupe_only"}
    settings.pop("source_dataset_column_name", None)
    db = DuckDBAPI()
    known_table, new_table = db.register(known), db.register(compared)
    linker = Linker(known_table, settings, log_level=logging.ERROR)
    for column in tf_columns(model):
        linker.table_management.compute_tf_table(column)
    chosen: list[Any] = [block_on(rule.key) for rule in blocking]
    prior = float(model["probability_two_random_records_match"])
    between = linker.inference.predict_between(
        known_table,
        new_table,
        blocking_rules_to_generate_predictions=chosen,
        threshold_match_probability=PAIRS_SCORED_ABOVE,
        warning_mode="never",
    ).as_pyarrow_table()
    within = linker.inference.predict_within(
        new_table,
        blocking_rules_to_generate_predictions=chosen,
        threshold_match_probability=PAIRS_SCORED_ABOVE,
        warning_mode="never",
    ).as_pyarrow_table()
    return (
        _explained(between, id_column=id_column, roles=roles, prior=prior),
        _explained(within, id_column=id_column, roles=roles, prior=prior),
    )


def tf_columns(model: Mapping[str, Any]) -> list[str]:
    """The columns a trained model adjusts by term frequency."""
    return sorted(
        {
            level["tf_adjustment_column"]
            for comparison in model["comparisons"]
            for level in comparison["comparison_levels"]
            if level.get("tf_adjustment_column")
        }
    )


def _by_source(records: pa.Table, source_column: str | None) -> list[pa.Table]:
    assert source_column is not None
    sources = pc.unique(records.column(source_column)).to_pylist()
    return [records.filter(pc.equal(records.column(source_column), s)) for s in sorted(sources)]


def _training_rules(used: Sequence[BlockingRule], roles: Mapping[str, Role]) -> list[BlockingRule]:
    """Two EM sessions whose blocking columns differ, so every comparison is trained once."""
    chosen = [used[0]]
    first = set(used[0].columns)
    other = next((rule for rule in used[1:] if not first & set(rule.columns)), None)
    if other is not None:
        chosen.append(other)
    return chosen


def _explained(
    pairs: pa.Table, *, id_column: str, roles: Mapping[str, Role], prior: float
) -> pa.Table:
    """The pairs with one ``weight_<column>`` per compared column (its match weight, the log2
    of its Bayes factor, term frequencies included) and ``weight_prior``: together they add up
    to ``match_weight``."""
    columns = {
        f"{id_column}_l": pairs.column(f"{id_column}_l"),
        f"{id_column}_r": pairs.column(f"{id_column}_r"),
        "match_probability": pairs.column("match_probability"),
        "match_weight": pairs.column("match_weight"),
        "weight_prior": pa.array(np.full(pairs.num_rows, math.log2(prior / (1 - prior)))),
    }
    for column in roles:
        weight = _floats(pairs.column(f"mw_{column}"))
        if f"mw_tf_adj_{column}" in pairs.column_names:
            weight = weight + _floats(pairs.column(f"mw_tf_adj_{column}"))
        columns[f"weight_{column}"] = pa.array(weight)
    return pa.table(columns)


def _floats(values: pa.ChunkedArray) -> np.ndarray:
    return np.nan_to_num(values.to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0)
