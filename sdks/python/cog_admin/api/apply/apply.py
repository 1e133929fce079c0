from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.changes import Changes
from ...models.problem import Problem
from ...models.spec import Spec
from ...types import UNSET, Response, Unset


def _get_kwargs(
    *,
    body: Spec,
    prune: bool | Unset = UNSET,
    dry_run: bool | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(if_match, Unset):
        headers["If-Match"] = if_match

    params: dict[str, Any] = {}

    params["prune"] = prune

    params["dry_run"] = dry_run

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/apply",
        "params": params,
    }

    _kwargs["json"] = body.to_dict()

    headers["Content-Type"] = "application/json"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Changes | Problem | None:
    if response.status_code == 200:
        response_200 = Changes.from_dict(response.json())

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


def _build_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> Response[Changes | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient,
    body: Spec,
    prune: bool | Unset = UNSET,
    dry_run: bool | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Response[Changes | Problem]:
    """Makes the store match the document: creates and updates what it lists;
    with `prune`, deletes what it does not. All or nothing, in one commit.

    Args:
        prune (bool | Unset):
        dry_run (bool | Unset):
        if_match (None | str | Unset):
        body (Spec): The declarative part of the control plane: what a YAML/TOML file holds.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Changes | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        prune=prune,
        dry_run=dry_run,
        if_match=if_match,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient,
    body: Spec,
    prune: bool | Unset = UNSET,
    dry_run: bool | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Changes | Problem | None:
    """Makes the store match the document: creates and updates what it lists;
    with `prune`, deletes what it does not. All or nothing, in one commit.

    Args:
        prune (bool | Unset):
        dry_run (bool | Unset):
        if_match (None | str | Unset):
        body (Spec): The declarative part of the control plane: what a YAML/TOML file holds.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Changes | Problem
    """

    return sync_detailed(
        client=client,
        body=body,
        prune=prune,
        dry_run=dry_run,
        if_match=if_match,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient,
    body: Spec,
    prune: bool | Unset = UNSET,
    dry_run: bool | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Response[Changes | Problem]:
    """Makes the store match the document: creates and updates what it lists;
    with `prune`, deletes what it does not. All or nothing, in one commit.

    Args:
        prune (bool | Unset):
        dry_run (bool | Unset):
        if_match (None | str | Unset):
        body (Spec): The declarative part of the control plane: what a YAML/TOML file holds.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[Changes | Problem]
    """

    kwargs = _get_kwargs(
        body=body,
        prune=prune,
        dry_run=dry_run,
        if_match=if_match,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient,
    body: Spec,
    prune: bool | Unset = UNSET,
    dry_run: bool | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Changes | Problem | None:
    """Makes the store match the document: creates and updates what it lists;
    with `prune`, deletes what it does not. All or nothing, in one commit.

    Args:
        prune (bool | Unset):
        dry_run (bool | Unset):
        if_match (None | str | Unset):
        body (Spec): The declarative part of the control plane: what a YAML/TOML file holds.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Changes | Problem
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            prune=prune,
            dry_run=dry_run,
            if_match=if_match,
        )
    ).parsed
