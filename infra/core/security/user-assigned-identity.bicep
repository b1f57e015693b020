// The one identity Hookflow runs as: the Functions host, the deployment (Flex Consumption pulls
// the package with it), Hookflow's own table client and Application Insights all use it, so
// there is no storage key or instrumentation key to hand out.
param name string
param location string = resourceGroup().location
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
