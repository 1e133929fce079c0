from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.partition_move import PartitionMove
from ...models.placement_table import PlacementTable
from ...models.problem import Problem
from ...types import UNSET, Response, Unset


def _get_kwargs(
    partition: int,
    *,
    body: PartitionMove,
    if_match: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(if_match, Unset):
        headers["If-Match"] = if_match

    _kwargs: dict[str, Any] = {
        "method": "put",
        "url": "/v1/placement/partitions/{partition}".format(
            partition=quote(str(partition), safe=""),
        ),
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> PlacementTable | Problem | None:
    if response.status_code == 200:
        response_200 = PlacementTable.from_dict(response.json())

        return response_200

    if response.status_code == 400:
        response_400 = Problem.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = Problem.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = Problem.from_dict(response.json())

        return response_403

    if response.status_code == 404:
        response_404 = Problem.from_dict(response.json())

        return response_404

    if response.status_code == 412:
        response_412 = Problem.from_dict(response.json())

        return response_412

    if response.status_code == 413:
        response_413 = Problem.from_dict(response.json())

        return response_413

    if response.status_code == 415:
        response_415 = Problem.from_dict(response.json())

        return response_415

    if response.status_code == 422:
        response_422 = Problem.from_dict(response.json())

        return response_422

    if response.status_code == 503:
        response_503 = Problem.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[PlacementTable | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    partition: int,
    *,
    client: AuthenticatedClient,
    body: PartitionMove,
    if_match: None | str | Unset = UNSET,
) -> Response[PlacementTable | Problem]:
    """Moves a partition (0–255) to a deployment: the instances follow within
    a round trip, their stores carrying the partition's data over.

    Args:
        partition (int):
        if_match (None | str | Unset):
        body (PartitionMove): Where a partition goes.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PlacementTable | Problem]
    """

    kwargs = _get_kwargs(
        partition=partition,
        body=body,
        if_match=if_match,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    partition: int,
    *,
    client: AuthenticatedClient,
    body: PartitionMove,
    if_match: None | str | Unset = UNSET,
) -> PlacementTable | Problem | None:
    """Moves a partition (0–255) to a deployment: the instances follow within
    a round trip, their stores carrying the partition's data over.

    Args:
        partition (int):
        if_match (None | str | Unset):
        body (PartitionMove): Where a partition goes.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PlacementTable | Problem
    """

    return sync_detailed(
        partition=partition,
        client=client,
        body=body,
        if_match=if_match,
    ).parsed


async def asyncio_detailed(
    partition: int,
    *,
    client: AuthenticatedClient,
    body: PartitionMove,
    if_match: None | str | Unset = UNSET,
) -> Response[PlacementTable | Problem]:
    """Moves a partition (0–255) to a deployment: the instances follow within
    a round trip, their stores carrying the partition's data over.

    Args:
        partition (int):
        if_match (None | str | Unset):
        body (PartitionMove): Where a partition goes.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[PlacementTable | Problem]
    """

    kwargs = _get_kwargs(
        partition=partition,
        body=body,
        if_match=if_match,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    partition: int,
    *,
    client: AuthenticatedClient,
    body: PartitionMove,
    if_match: None | str | Unset = UNSET,
) -> PlacementTable | Problem | None:
    """Moves a partition (0–255) to a deployment: the instances follow within
    a round trip, their stores carrying the partition's data over.

    Args:
        partition (int):
        if_match (None | str | Unset):
        body (PartitionMove): Where a partition goes.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        PlacementTable | Problem
    """

    return (
        await asyncio_detailed(
            partition=partition,
            client=client,
            body=body,
            if_match=if_match,
        )
    ).parsed
