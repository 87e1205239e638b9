#include "handler/api/smtp_client.h"
