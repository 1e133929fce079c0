from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.named_plugin import NamedPlugin
from ...models.on_failure import OnFailure
from ...models.plugin_lang import PluginLang
from ...models.problem import Problem
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    name: str,
    *,
    body: File,
    lang: PluginLang | Unset = UNSET,
    version: str | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    on_error: OnFailure | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if not isinstance(if_match, Unset):
        headers["If-Match"] = if_match

    params: dict[str, Any] = {}

    json_lang: str | Unset = UNSET
    if not isinstance(lang, Unset):
        json_lang = lang.value

    params["lang"] = json_lang

    params["version"] = version

    params["enabled"] = enabled

    json_on_error: str | Unset = UNSET
    if not isinstance(on_error, Unset):
        json_on_error = on_error.value

    params["on_error"] = json_on_error

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "put",
        "url": "/v1/plugins/{name}".format(
            name=quote(str(name), safe=""),
        ),
        "params": params,
    }

    _kwargs["content"] = body.payload
    headers["Content-Type"] = "application/octet-stream"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(*, client: AuthenticatedClient | Client, response: httpx.Response) -> NamedPlugin | Problem | None:
    if response.status_code == 200:
        response_200 = NamedPlugin.from_dict(response.json())

        return response_200

    if response.status_code == 201:
        response_201 = NamedPlugin.from_dict(response.json())

        return response_201

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
) -> Response[NamedPlugin | Problem]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    name: str,
    *,
    client: AuthenticatedClient,
    body: File,
    lang: PluginLang | Unset = UNSET,
    version: str | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    on_error: OnFailure | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Response[NamedPlugin | Problem]:
    """Uploads a plugin's bytes (the `.wasm` module or the `.py` source, at
    most 16 MiB): a new plugin, or a new version of an installed one, whose
    attachments, configuration and limits are kept. The server checks it
    in the sandbox under every plan it runs for before storing it by digest.

    Args:
        name (str):
        lang (PluginLang | Unset): What a plugin's bytes are.
        version (str | Unset):
        enabled (bool | Unset):
        on_error (OnFailure | Unset): A plugin's failure policy.
        if_match (None | str | Unset):
        body (File): The bytes of an upload, as the description has them.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[NamedPlugin | Problem]
    """

    kwargs = _get_kwargs(
        name=name,
        body=body,
        lang=lang,
        version=version,
        enabled=enabled,
        on_error=on_error,
        if_match=if_match,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    name: str,
    *,
    client: AuthenticatedClient,
    body: File,
    lang: PluginLang | Unset = UNSET,
    version: str | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    on_error: OnFailure | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> NamedPlugin | Problem | None:
    """Uploads a plugin's bytes (the `.wasm` module or the `.py` source, at
    most 16 MiB): a new plugin, or a new version of an installed one, whose
    attachments, configuration and limits are kept. The server checks it
    in the sandbox under every plan it runs for before storing it by digest.

    Args:
        name (str):
        lang (PluginLang | Unset): What a plugin's bytes are.
        version (str | Unset):
        enabled (bool | Unset):
        on_error (OnFailure | Unset): A plugin's failure policy.
        if_match (None | str | Unset):
        body (File): The bytes of an upload, as the description has them.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        NamedPlugin | Problem
    """

    return sync_detailed(
        name=name,
        client=client,
        body=body,
        lang=lang,
        version=version,
        enabled=enabled,
        on_error=on_error,
        if_match=if_match,
    ).parsed


async def asyncio_detailed(
    name: str,
    *,
    client: AuthenticatedClient,
    body: File,
    lang: PluginLang | Unset = UNSET,
    version: str | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    on_error: OnFailure | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> Response[NamedPlugin | Problem]:
    """Uploads a plugin's bytes (the `.wasm` module or the `.py` source, at
    most 16 MiB): a new plugin, or a new version of an installed one, whose
    attachments, configuration and limits are kept. The server checks it
    in the sandbox under every plan it runs for before storing it by digest.

    Args:
        name (str):
        lang (PluginLang | Unset): What a plugin's bytes are.
        version (str | Unset):
        enabled (bool | Unset):
        on_error (OnFailure | Unset): A plugin's failure policy.
        if_match (None | str | Unset):
        body (File): The bytes of an upload, as the description has them.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[NamedPlugin | Problem]
    """

    kwargs = _get_kwargs(
        name=name,
        body=body,
        lang=lang,
        version=version,
        enabled=enabled,
        on_error=on_error,
        if_match=if_match,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    name: str,
    *,
    client: AuthenticatedClient,
    body: File,
    lang: PluginLang | Unset = UNSET,
    version: str | Unset = UNSET,
    enabled: bool | Unset = UNSET,
    on_error: OnFailure | Unset = UNSET,
    if_match: None | str | Unset = UNSET,
) -> NamedPlugin | Problem | None:
    """Uploads a plugin's bytes (the `.wasm` module or the `.py` source, at
    most 16 MiB): a new plugin, or a new version of an installed one, whose
    attachments, configuration and limits are kept. The server checks it
    in the sandbox under every plan it runs for before storing it by digest.

    Args:
        name (str):
        lang (PluginLang | Unset): What a plugin's bytes are.
        version (str | Unset):
        enabled (bool | Unset):
        on_error (OnFailure | Unset): A plugin's failure policy.
        if_match (None | str | Unset):
        body (File): The bytes of an upload, as the description has them.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        NamedPlugin | Problem
    """

    return (
        await asyncio_detailed(
            name=name,
            client=client,
            body=body,
            lang=lang,
            version=version,
            enabled=enabled,
            on_error=on_error,
            if_match=if_match,
        )
    ).parsed
