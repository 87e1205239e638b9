// lmtp: being written; see issue 11.
