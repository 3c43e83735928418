"""The event schema validated straight into plain dictionaries.

`AuditEventIn` is the contract: the OpenAPI document shows it, and its field types carry
every constraint and every normalising validator (NFC identifiers, sanitized free text,
canonical IP addresses). Ingest does not need its objects, though, only the content they
dump to. Validating into models and dumping them builds each event twice, and a batch of
500 benchmark events leaves 6,500 tracked objects for the cyclic collector to walk while
it is parsed, against 2,500 for the dictionaries alone. `PlainSchema` derives a `TypedDict`
from a model field by field, so it cannot drift from it: the same annotated types, the same
validators, nested models as nested TypedDicts, enumerations as literals of their values
(so a value is a plain `str`, as a JSON dump gives it), and the model's strictness and
`extra="forbid"`.

What a model dump does that validation into dictionaries does not, `PlainSchema` does
after validating: fields absent from the input get their model default unless it is
`None`, and fields that are `None` are left out (`model_dump(exclude_none=True)` at every
model level; values inside free-form `dict` fields are kept as they are). Values of other
types (`UUID`, `datetime`) stay the objects pydantic made; the caller writes them as text.

Measured with `uv run python -m loadtests.bench.parsing` (batches of 500 benchmark events,
one process, fastest of seven passes): validating into models and dumping them 19.4 µs per
event, the derived schema with its completion 8.4 µs; all of `parse_batch` 30.7 µs before,
21.4 µs after.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Union, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import TypedDict

__all__ = ["PlainSchema"]

# The type constructors, for types built at run time from a model's fields (a type
# checker only accepts them with types written out in the source).
_Annotated: Any = Annotated
_Literal: Any = Literal
_Union: Any = Union
_List: Any = list
_Dict: Any = dict
_TypedDict: Any = TypedDict


# --8<-- [start:complete]
@dataclass(frozen=True, slots=True)
class _Shape:
    """What completing one model's dictionary takes: defaults, `None` fields, nested models."""

    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    nullable: tuple[str, ...]
    nested: tuple[tuple[str, _Shape], ...]
    nested_lists: tuple[tuple[str, _Shape], ...]

    def complete(self, value: dict[str, Any]) -> None:
        for name in self.nullable:
            if name in value and value[name] is None:
                del value[name]
        for name, default in self.defaults:
            if name not in value:
                value[name] = default()
        for name, shape in self.nested:
            child = value.get(name)
            if child is not None:
                shape.complete(child)
        for name, shape in self.nested_lists:
            for item in value.get(name) or ():
                shape.complete(item)


# --8<-- [end:complete]


class PlainSchema:
    """Validates JSON against ``model`` and returns what `model_dump(exclude_none=True)` would.

    Args:
        model: A pydantic model whose nested models, if any, are fields of a model type
            (optionally `| None`) or lists of one, as in `BatchIn` and `AuditEventIn`.
            Deeper nesting (a list of lists of models, a dict of models) is refused
            rather than completed wrong.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        self._typed: dict[type[BaseModel], Any] = {}
        self._adapter: TypeAdapter[dict[str, Any]] = TypeAdapter(self._typed_dict(model))
        self._shape = self._shape_of(model)

    def validate_json(self, raw: bytes) -> dict[str, Any]:
        """The validated, completed dictionary of ``raw``.

        Raises:
            pydantic.ValidationError: as `model.model_validate_json(raw, strict=True)`
                would, with the same locations.
        """
        value = self._adapter.validate_json(raw, strict=True)
        self._shape.complete(value)
        return value

    # -- deriving the TypedDicts -----------------------------------------------------------
    def _typed_dict(self, model: type[BaseModel]) -> Any:
        known = self._typed.get(model)
        if known is not None:
            return known
        _refuse_what_is_not_carried_over(model)
        fields: dict[str, Any] = {}
        for name, info in model.model_fields.items():
            annotation = self._plain(info.annotation)
            if info.metadata:
                annotation = _Annotated[(annotation, *info.metadata)]
            fields[name] = annotation if info.is_required() else NotRequired[annotation]
        typed = _TypedDict(f"{model.__name__}Plain", fields)
        typed.__pydantic_config__ = ConfigDict(
            strict=bool(model.model_config.get("strict")),
            extra=model.model_config.get("extra"),
        )
        self._typed[model] = typed
        return typed

    def _plain(self, annotation: Any) -> Any:
        """``annotation`` with models replaced by TypedDicts and enums by literals."""
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self._typed_dict(annotation)
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return _Literal[tuple(member.value for member in annotation)]
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            return _Annotated[(self._plain(args[0]), *args[1:])]
        if origin is Union or origin is types.UnionType:
            return _Union[tuple(self._plain(a) for a in args)]
        if origin is list:
            return _List[self._plain(args[0])]
        if origin is dict:
            return _Dict[self._plain(args[0]), self._plain(args[1])]
        return annotation

    # -- what completing a dictionary takes ------------------------------------------------
    def _shape_of(self, model: type[BaseModel]) -> _Shape:
        defaults: list[tuple[str, Callable[[], Any]]] = []
        nullable: list[str] = []
        nested: list[tuple[str, _Shape]] = []
        nested_lists: list[tuple[str, _Shape]] = []
        for name, info in model.model_fields.items():
            if info.default_factory is not None:
                defaults.append((name, cast(Callable[[], Any], info.default_factory)))
            elif not info.is_required() and info.default is not None:
                defaults.append((name, _copier(info.default)))
            if _admits_none(info.annotation):
                nullable.append(name)
            inner = _model_in(info.annotation)
            if inner is not None:
                nested.append((name, self._shape_of(inner)))
            elif (item := _list_item(info.annotation)) is not None and (
                listed := _model_in(item)
            ) is not None:
                nested_lists.append((name, self._shape_of(listed)))
            elif _holds_models(info.annotation):
                raise TypeError(
                    f"{model.__name__}.{name}: models nested this way are not completed"
                )
        return _Shape(tuple(defaults), tuple(nullable), tuple(nested), tuple(nested_lists))


def _refuse_what_is_not_carried_over(model: type[BaseModel]) -> None:
    """Models whose rules live outside their field types would be validated wrong.

    Validators declared on the class (`field_validator`, `model_validator`) and aliases
    belong to the model, not to the annotated types the TypedDict is made of.
    """
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.model_validators or decorators.validators:
        raise TypeError(f"{model.__name__}: validators declared on the class are not carried over")
    for name, info in model.model_fields.items():
        if info.alias is not None or info.validation_alias is not None:
            raise TypeError(f"{model.__name__}.{name}: aliases are not carried over")


def _copier(default: Any) -> Callable[[], Any]:
    # A mutable default (`[]`) is copied per value, as pydantic copies it per model.
    if isinstance(default, list | dict | set):
        return lambda: type(default)(default)
    return lambda: default


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types of a union, or ``annotation`` alone."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _admits_none(annotation: Any) -> bool:
    return any(a is None or a is type(None) for a in _members(annotation))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model ``annotation`` is, alone or `| None`."""
    models = [a for a in _members(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _list_item(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is list else None


def _holds_models(annotation: Any) -> bool:
    """Whether a model appears anywhere inside ``annotation``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_models(arg) for arg in get_args(annotation))
