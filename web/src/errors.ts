/**
 * The rejection value of every call: a plain `{code, message}` object with a ZIM
 * error code, made here for the codes the SDK produces itself.
 */

import { ZIMErrorCode } from './enums';
import type { ZIMError } from './types';

/** An error object with `code` and `message`. */
export function zimError(code: number, message: string): ZIMError {
  return { code, message };
}

/** The stable name of a code (`NotLoggedIn`), or `Code<n>` for an unknown one. */
export function codeName(code: number): string {
  const name = (ZIMErrorCode as unknown as Record<number, string | undefined>)[code];
  return name ?? `Code${code}`;
}

/** `6000121 NotLoggedIn: message`, as the Rust SDK's `Display` prints it. */
export function describeError(e: ZIMError): string {
  return `${e.code} ${codeName(e.code)}: ${e.message}`;
}

/** 6000001: a parameter is invalid. */
export function paramError(message: string): ZIMError {
  return zimError(ZIMErrorCode.ParamInvalid, message);
}

/** 6000002: the instance was destroyed. */
export function destroyedError(): ZIMError {
  return zimError(ZIMErrorCode.NotInitialized, 'this ZIM instance was destroyed; create a new one');
}

/** 6000121: the call needs a login. */
export function notLoggedIn(what: string): ZIMError {
  return zimError(ZIMErrorCode.NotLoggedIn, `${what} needs a login: call login first`);
}

/** 6000104, or 6000204 when the failed call was a message send. */
export function networkError(isSend: boolean, message: string): ZIMError {
  return zimError(isSend ? ZIMErrorCode.MessageNetworkError : ZIMErrorCode.NetworkError, message);
}
