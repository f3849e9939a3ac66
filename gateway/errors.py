"""The gateway's protocol-neutral errors.

Every failure the service or auth layers can report is a :class:`GatewayError` subclass
carrying an S3 error code, an HTTP status and a human message. Renderers turn them into
S3 XML (``gateway.s3.errors``) or JSON (``gateway.api.errors``). Nothing here knows about
XML or JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class GatewayError(Exception):
    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "We encountered an internal error. Please try again."

    def __init__(
        self,
        message: str | None = None,
        *,
        resource: str | None = None,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.resource = resource
        #: Extra elements for the S3 error body (``BucketName``, ``Key``, ``ArgumentName`` …).
        self.fields: dict[str, str] = dict(fields or {})
        #: Extra response headers (``Content-Range`` on ``InvalidRange`` …).
        self.headers: dict[str, str] = dict(headers or {})


def _error(code: str, status: int, message: str) -> type[GatewayError]:
    return type(code, (GatewayError,), {"code": code, "status": status, "default_message": message})


class InternalError(GatewayError):
    pass


# -- 400 ---------------------------------------------------------------------------------
class InvalidArgument(GatewayError):
    code = "InvalidArgument"
    status = 400
    default_message = "Invalid Argument"

    def __init__(self, message: str | None = None, *, name: str | None = None,
                 value: str | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        if name is not None:
            self.fields["ArgumentName"] = name
        if value is not None:
            self.fields["ArgumentValue"] = value


class InvalidRange(GatewayError):
    code = "InvalidRange"
    status = 416
    default_message = "The requested range is not satisfiable"

    def __init__(self, size: int, requested: str = "") -> None:
        super().__init__(headers={"Content-Range": f"bytes */{size}"},
                         fields={"RangeRequested": requested, "ActualObjectSize": str(size)})


InvalidPartNumber = _error("InvalidPartNumber", 416, "The requested partnumber is not satisfiable")
InvalidBucketName = _error("InvalidBucketName", 400, "The specified bucket is not valid.")
InvalidRequest = _error("InvalidRequest", 400, "Invalid Request")
InvalidDigest = _error("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
BadDigest = _error("BadDigest", 400,
                   "The Content-MD5 you specified did not match what we received.")
XAmzContentSHA256Mismatch = _error(
    "XAmzContentSHA256Mismatch", 400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.")
InvalidChecksum = _error("BadDigest", 400,
                         "The checksum you specified did not match what we received.")
MalformedXML = _error("MalformedXML", 400,
                      "The XML you provided was not well-formed or did not validate "
                      "against our published schema.")
KeyTooLongError = _error("KeyTooLongError", 400, "Your key is too long")
MetadataTooLarge = _error("MetadataTooLarge", 400,
                          "Your metadata headers exceed the maximum allowed metadata size.")
EntityTooSmall = _error("EntityTooSmall", 400,
                        "Your proposed upload is smaller than the minimum allowed object size.")
EntityTooLarge = _error("EntityTooLarge", 400,
                        "Your proposed upload exceeds the maximum allowed object size.")
IncompleteBody = _error("IncompleteBody", 400,
                        "You did not provide the number of bytes specified by the "
                        "Content-Length HTTP header.")
InvalidPart = _error("InvalidPart", 400,
                     "One or more of the specified parts could not be found. The part may "
                     "not have been uploaded, or the specified entity tag may not match the "
                     "part's entity tag.")
InvalidPartOrder = _error("InvalidPartOrder", 400,
                          "The list of parts was not in ascending order. Parts must be "
                          "ordered by part number.")
AuthorizationHeaderMalformed = _error("AuthorizationHeaderMalformed", 400,
                                      "The authorization header is malformed.")
AuthorizationQueryParametersError = _error(
    "AuthorizationQueryParametersError", 400,
    "Error parsing the X-Amz-Credential parameter.")
IllegalLocationConstraintException = _error(
    "IllegalLocationConstraintException", 400,
    "The specified location-constraint is not valid.")
InvalidLocationConstraint = _error("InvalidLocationConstraint", 400,
                                   "The specified location constraint is not valid.")
UnexpectedContent = _error("UnexpectedContent", 400,
                           "This request does not support content.")
InvalidStorageClass = _error("InvalidStorageClass", 400,
                             "The storage class you specified is not valid.")
MissingSecurityHeader = _error("MissingSecurityHeader", 400,
                               "Your request was missing a required header.")
InvalidPolicyDocument = _error("InvalidPolicyDocument", 400,
                              "The content of the form does not meet the conditions "
                              "specified in the policy document.")
MalformedPOSTRequest = _error("MalformedPOSTRequest", 400,
                              "The body of your POST request is not well-formed "
                              "multipart/form-data.")
InvalidEncodingType = _error("InvalidArgument", 400, "Invalid Encoding Method specified in Request")
InvalidEncryptionAlgorithmError = _error(
    "InvalidEncryptionAlgorithmError", 400,
    "The Encryption request you specified is not valid. Supported value: AES256.")
InvalidTag = _error("InvalidTag", 400, "The tag provided was not a valid tag.")
BadRequest = _error("BadRequest", 400, "An error occurred when parsing the HTTP request.")
MaxMessageLengthExceeded = _error("MaxMessageLengthExceeded", 400, "Your request was too big.")
RequestTimeout = _error("RequestTimeout", 400,
                        "Your socket connection to the server was not read from or written "
                        "to within the timeout period. Idle connections will be closed.")
RequestHeaderSectionTooLarge = _error("RequestHeaderSectionTooLarge", 400,
                                      "Your request header section exceeds the maximum "
                                      "allowed size.")

# -- 403 ---------------------------------------------------------------------------------
AccessDenied = _error("AccessDenied", 403, "Access Denied")
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch", 403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.")
InvalidAccessKeyId = _error("InvalidAccessKeyId", 403,
                            "The AWS Access Key Id you provided does not exist in our records.")
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed", 403,
    "The difference between the request time and the server's time is too large.")

CORSForbidden = _error(
    "AccessForbidden", 403,
    "CORSResponse: This CORS request is not allowed. This is usually because the evaluation "
    "of Origin, request method / Access-Control-Request-Method or "
    "Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.")

# -- 404 / 405 / 409 / 411 / 412 -----------------------------------------------------------
NoSuchBucket = _error("NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _error("NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _error("NoSuchUpload", 404,
                      "The specified multipart upload does not exist. The upload ID may be "
                      "invalid, or the upload may have been aborted or completed.")
NoSuchCORSConfiguration = _error("NoSuchCORSConfiguration", 404,
                                 "The CORS configuration does not exist")
NoSuchTagSet = _error("NoSuchTagSet", 404, "The TagSet does not exist")
ServerSideEncryptionConfigurationNotFoundError = _error(
    "ServerSideEncryptionConfigurationNotFoundError", 404,
    "The server side encryption configuration was not found")
NoSuchVersion = _error("NoSuchVersion", 404,
                       "The specified version does not exist.")
MethodNotAllowed = _error("MethodNotAllowed", 405,
                          "The specified method is not allowed against this resource.")
BucketAlreadyExists = _error(
    "BucketAlreadyExists", 409,
    "The requested bucket name is not available. The bucket namespace is shared by all "
    "users of the system. Please select a different name and try again.")
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou", 409,
    "Your previous request to create the named bucket succeeded and you already own it.")
BucketNotEmpty = _error("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
ConditionalRequestConflict = _error(
    "ConditionalRequestConflict", 409,
    "A conflicting operation occurred. If using PutObject you can retry the request.")
MissingContentLength = _error("MissingContentLength", 411,
                              "You must provide the Content-Length HTTP header.")
PreconditionFailed = _error("PreconditionFailed", 412,
                            "At least one of the pre-conditions you specified did not hold")

# -- 5xx ---------------------------------------------------------------------------------
NotImplemented_ = _error("NotImplemented", 501,
                         "A header or query you provided implies functionality that is not "
                         "implemented.")
ServiceUnavailable = _error("ServiceUnavailable", 503,
                            "The service is unavailable. Please retry.")
SlowDown = _error("SlowDown", 503, "Please reduce your request rate.")
InsufficientStorage = _error("InsufficientStorage", 507,
                             "The storage backend has no space left for this request.")


class QuotaExceeded(GatewayError):
    code = "QuotaExceeded"
    status = 403
    default_message = "The bucket's storage quota would be exceeded by this request."

    def __init__(self, limit: int, used: int, message: str | None = None) -> None:
        super().__init__(message, fields={"Quota": str(limit), "Used": str(used)})
        self.limit = limit
        self.used = used


class NotModified(GatewayError):
    """Not an error to the client: a conditional GET/HEAD whose answer is 304."""

    code = "NotModified"
    status = 304
    default_message = "Not Modified"
