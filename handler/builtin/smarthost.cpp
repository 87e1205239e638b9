// smarthost: being written; see issue 11.
