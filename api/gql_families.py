"""The GraphQL root fields of the domain families (validators, bridge reserves), merged into the root Query by
api/graphql.py. Each family keeps its types and resolvers in its own module and lists its Query type here."""

from __future__ import annotations


def families() -> tuple[type, ...]:
    from api import gql_log, gql_reserves, gql_validators

    return (gql_log.Query, gql_validators.Query, gql_reserves.Query)
