"""Synthetic Brazilian customer records with injected duplicates and their truth, seeded.

Each person is one record; a share of persons get one or two more records under other ids, as
other systems write them: accents dropped and case changed, name particles left out, given and
family names swapped, the CPF written with or without its dots and dash (or left out), a typo
in the name, a birth date mistyped, a phone in another format, a moved address.

Example:
    >>> table, truth = people_table(rows=1000, duplicates=0.1, seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

FIRST_NAMES = (
    "José", "João", "Antônio", "Francisco", "Carlos", "Paulo", "Pedro", "Lucas", "Luiz",
    "Marcos", "Luís", "Gabriel", "Rafael", "Daniel", "Marcelo", "Bruno", "Eduardo", "Felipe",
    "Raimundo", "Rodrigo", "Maria", "Ana", "Francisca", "Antônia", "Adriana", "Juliana",
    "Márcia", "Fernanda", "Patrícia", "Aline", "Sandra", "Camila", "Amanda", "Bruna",
    "Jéssica", "Letícia", "Júlia", "Luciana", "Vanessa", "Mariana", "Gabriela", "Conceição",
    "Sebastião", "Thiago", "Vitória", "Beatriz", "Larissa", "Renata", "Cláudia", "Simone",
)  # fmt: skip
MIDDLE_NAMES = (
    "das Graças", "de Fátima", "Aparecida", "Cristina", "Helena", "Eduarda", "Henrique",
    "Augusto", "Vitor", "Luiz", "da Conceição", "de Jesus", "Alberto", "Carolina",
)  # fmt: skip
SURNAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
    "Lima", "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida", "Lopes", "Soares",
    "Fernandes", "Vieira", "Barbosa", "Rocha", "Dias", "Nascimento", "Andrade", "Moreira",
    "Nunes", "Marques", "Machado", "Mendes", "Freitas", "Cardoso", "Ramos", "Gonçalves",
    "Santana", "Teixeira", "Araújo", "Monteiro", "Assunção", "Magalhães", "Brandão",
)  # fmt: skip
PARTICLES = ("da", "de", "do", "dos", "das")
#: City, state, and the first digits of its CEPs.
CITIES = (
    ("São Paulo", "SP", "01"), ("Rio de Janeiro", "RJ", "20"), ("Belo Horizonte", "MG", "30"),
    ("Salvador", "BA", "40"), ("Fortaleza", "CE", "60"), ("Curitiba", "PR", "80"),
    ("Recife", "PE", "50"), ("Porto Alegre", "RS", "90"), ("Brasília", "DF", "70"),
    ("Goiânia", "GO", "74"), ("Belém", "PA", "66"), ("Manaus", "AM", "69"),
    ("Campinas", "SP", "13"), ("São Luís", "MA", "65"), ("Maceió", "AL", "57"),
    ("Florianópolis", "SC", "88"), ("Niterói", "RJ", "24"), ("Uberlândia", "MG", "38"),
)  # fmt: skip
STREETS = (
    "Rua das Flores", "Avenida Brasil", "Rua São João", "Rua Sete de Setembro",
    "Avenida Paulista", "Rua da Consolação", "Rua XV de Novembro", "Avenida Getúlio Vargas",
    "Rua Tiradentes", "Rua Dom Pedro II", "Avenida Afonso Pena", "Rua Rui Barbosa",
)  # fmt: skip
DOMAINS = ("gmail.com", "hotmail.com", "yahoo.com.br", "outlook.com", "uol.com.br")
COLUMNS = ("id", "nome", "nascimento", "cpf", "email", "telefone", "cep", "cidade", "endereco")


def cpf_check_digits(first_nine: str) -> str:
    """The two check digits of a CPF's first nine digits."""
    digits = [int(c) for c in first_nine]
    first = sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) * 10 % 11 % 10
    digits.append(first)
    second = sum(d * w for d, w in zip(digits, range(11, 1, -1), strict=True)) * 10 % 11 % 10
    return f"{first}{second}"


def people_table(
    *, rows: int, duplicates: float = 0.1, seed: int = 7, with_cpf: bool = True
) -> tuple[pa.Table, pa.Table]:
    """About ``rows`` records (persons plus their extra records, ``duplicates`` of the rows),
    and the truth: each record's ``person``."""
    rng = np.random.default_rng(seed)
    persons = max(1, round(rows / (1 + duplicates)))
    people = [_person(rng, i, with_cpf=with_cpf) for i in range(persons)]
    records = [dict(p, person=i) for i, p in enumerate(people)]
    extra = rows - persons
    for i in rng.choice(persons, size=min(extra, persons), replace=False).tolist():
        records.append(dict(_variant(rng, people[i]), person=i))
    while len(records) < rows:
        i = int(rng.integers(persons))
        records.append(dict(_variant(rng, people[i]), person=i))
    order = rng.permutation(len(records))
    shuffled = [records[j] for j in order.tolist()]
    ids = [f"R{n:08d}" for n in rng.permutation(len(shuffled) * 3)[: len(shuffled)].tolist()]
    table = pa.table(
        {
            "id": ids,
            **{c: [r[c] for r in shuffled] for c in COLUMNS[1:]},
        }
    )
    truth = pa.table({"id": ids, "person": [r["person"] for r in shuffled]})
    return table, truth


def people_with_behaviour(
    *, rows: int, duplicates: float = 0.1, seed: int = 7
) -> tuple[pa.Table, pa.Table]:
    """:func:`people_table`'s records with a spend (``gasto``) and visits (``visitas``) per
    person, the same on each of its records and drawn from three kinds of customer: a base to
    segment with identity on. Returns the records and the truth."""
    table, truth = people_table(rows=rows, duplicates=duplicates, seed=seed)
    rng = np.random.default_rng(seed)
    kind = np.array(truth["person"].to_pylist()) % 3
    spend = np.exp(rng.normal(np.log([40.0, 300.0, 2000.0])[kind], 0.2))
    visits = rng.normal(np.array([2.0, 8.0, 20.0])[kind], 0.5)
    table = table.append_column("gasto", pa.array(spend)).append_column("visitas", pa.array(visits))
    return table, truth


def write_people(path: Path, *, rows: int, duplicates: float = 0.1, seed: int = 7) -> Path:
    """Write the records (CSV) and their truth beside them (``<name>_truth.csv``)."""
    table, truth = people_table(rows=rows, duplicates=duplicates, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, path)
    pacsv.write_csv(truth, path.with_name(f"{path.stem}_truth.csv"))
    return path


#: The identity columns :func:`with_people` adds to a customer table, and their roles.
PERSON_ROLES = {
    "nome": "full_name",
    "nascimento": "birth_date",
    "cpf": "cpf",
    "email": "email",
    "telefone": "phone",
    "cep": "postcode",
    "cidade": "city",
}
#: The roles of every column of :func:`people_table` (the address too).
PEOPLE_ROLES = {**PERSON_ROLES, "endereco": "address"}


def with_people(
    customers: pa.Table, *, id_column: str, duplicates: float, seed: int = 7
) -> tuple[pa.Table, pa.Table]:
    """A customer table with a person behind each row (name, birth date, CPF, email, phone,
    CEP, city) and, for ``duplicates`` of its rows, another record of the same person under a
    new id, its behaviour copied, its identity written as another system would; and the truth:
    each row's ``person``."""
    rng = np.random.default_rng(seed)
    people = [_person(rng, i, with_cpf=True) for i in range(customers.num_rows)]
    picked = np.sort(
        rng.choice(customers.num_rows, size=round(duplicates * customers.num_rows), replace=False)
    )
    extra = customers.take(pa.array(picked))
    new_ids = [f"DUP{i:09d}" for i in range(len(picked))]
    extra = extra.set_column(
        extra.column_names.index(id_column),
        id_column,
        pa.array(new_ids, extra.schema.field(id_column).type),
    )
    identities = people + [_variant(rng, people[i]) for i in picked.tolist()]
    table = pa.concat_tables([customers, extra])
    for column in PERSON_ROLES:
        table = table.append_column(column, pa.array([p[column] for p in identities], pa.string()))
    persons = list(range(customers.num_rows)) + picked.tolist()
    truth = pa.table({id_column: table.column(id_column), "person": persons})
    return table, truth


def _person(rng: np.random.Generator, index: int, *, with_cpf: bool) -> dict[str, str | None]:
    first = str(rng.choice(FIRST_NAMES))
    middle = str(rng.choice(MIDDLE_NAMES)) if rng.random() < 0.5 else ""
    surnames = [str(s) for s in rng.choice(SURNAMES, size=2, replace=False)]
    particle = str(rng.choice(PARTICLES)) if rng.random() < 0.4 else ""
    name = " ".join(p for p in (first, middle, particle, surnames[0], surnames[1]) if p)
    city, _, prefix = CITIES[int(rng.integers(len(CITIES)))]
    born = np.datetime64("1940-01-01") + int(rng.integers(0, 365 * 62))
    nine = "".join(str(d) for d in rng.integers(0, 10, size=9))
    cpf = nine + cpf_check_digits(nine)
    ddd = prefix if prefix[0] != "0" else "11"
    return {
        "nome": name.upper() if rng.random() < 0.3 else name,
        "nascimento": _day_first(born),
        "cpf": _cpf_written(rng, cpf) if with_cpf else None,
        "email": f"{_ascii(first).lower()}.{_ascii(surnames[1]).lower()}{index % 997}"
        f"@{rng.choice(DOMAINS)}",
        "telefone": f"({ddd}) 9{rng.integers(1000, 9999)}-{rng.integers(1000, 9999)}",
        "cep": f"{prefix}{rng.integers(100, 999)}-{rng.integers(0, 999):03d}",
        "cidade": city,
        "endereco": f"{rng.choice(STREETS)}, {rng.integers(1, 3000)}",
    }


def _variant(rng: np.random.Generator, person: dict[str, str | None]) -> dict[str, str | None]:
    """Another system's record of the same person: a few fields written otherwise."""
    record = dict(person)
    name = str(person["nome"])
    changes = rng.choice(7, size=int(rng.integers(1, 4)), replace=False).tolist()
    for change in changes:
        if change == 0:
            name = _ascii(name).lower()
        elif change == 1:
            name = " ".join(w for w in name.split() if w.lower() not in PARTICLES)
        elif change == 2:
            words = name.split()
            name = f"{words[-1]}, {' '.join(words[:-1])}" if len(words) > 1 else name
        elif change == 3:
            name = _typo(rng, name)
        elif change == 4:
            day, month, year = str(person["nascimento"]).split("/")
            record["nascimento"] = (
                f"{month}/{day}/{year}" if int(day) <= 12 else f"{day}/{month}/{int(year) + 1}"
            )
        elif change == 5:
            city, _, prefix = CITIES[int(rng.integers(len(CITIES)))]
            record["cidade"] = city
            record["cep"] = f"{prefix}{rng.integers(100, 999)}{rng.integers(0, 999):03d}"
            record["endereco"] = f"{rng.choice(STREETS)}, {rng.integers(1, 3000)}"
        else:
            record["email"] = None if rng.random() < 0.5 else str(person["email"]).upper()
    record["nome"] = name
    if person["cpf"] is not None:
        digits = "".join(c for c in str(person["cpf"]) if c.isdigit())
        record["cpf"] = None if rng.random() < 0.2 else _cpf_written(rng, digits)
    phone = "".join(c for c in str(person["telefone"]) if c.isdigit())
    record["telefone"] = f"+55 {phone}" if rng.random() < 0.5 else phone
    # Other systems often hold another contact: a new phone, no email or another one.
    if rng.random() < 0.3:
        record["telefone"] = f"({phone[:2]}) 9{rng.integers(1000, 9999)}-{rng.integers(1000, 9999)}"
    contact = rng.random()
    if contact < 0.3:
        record["email"] = None
    elif contact < 0.5:
        local, _, _ = str(person["email"]).partition("@")
        record["email"] = f"{local}.{rng.integers(10, 99)}@{rng.choice(DOMAINS)}"
    return record


def _cpf_written(rng: np.random.Generator, digits: str) -> str:
    if rng.random() < 0.5:
        return f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}"
    return digits


def _typo(rng: np.random.Generator, text: str) -> str:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 4:
        return text
    i = int(rng.choice(letters[1:]))
    if rng.random() < 0.5:
        return text[:i] + text[i + 1 :]
    return text[:i] + str(rng.choice(list("aeioulnrst"))) + text[i + 1 :]


def _day_first(day: np.datetime64) -> str:
    year, month, date = str(day).split("-")
    return f"{date}/{month}/{year}"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
